"""`interpgpt study`: every stage of the matched-pair study as one resumable pipeline.

`stages` lists the stages as data, `config` holds their settings (one section per
stage), `pipeline` runs them with per-stage hashes and resumption, `report` renders
report.html and report.md from the stages' records.
"""
