"""TaskGPT, its generation loop, and the unhooked fast paths (`fast/`) tested equal to it."""

from interpgpt.model.taskgpt import PRESETS, GPTConfig, TaskGPT, preset

__all__ = ["PRESETS", "GPTConfig", "TaskGPT", "preset"]
