"""The release commands' defaults: data only, no torch, so the command line reads them
without loading the build."""

from __future__ import annotations

from pathlib import Path

CHECK_TASKS = 30
"""Unseen-family test tasks of the fixed behaviour check `release verify` repeats."""
WORK_DIR = Path("runs/release-build")
"""Study-layout work dir `release build` trains in (a killed build resumes it)."""
