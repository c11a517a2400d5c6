"""TaskGPT, its generation loop, and the unhooked fast paths (`fast/`) tested equal to it.

`config` holds the shape, the presets and the sampling settings as data (no torch).
"""
