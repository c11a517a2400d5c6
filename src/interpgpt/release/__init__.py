"""The matched-pair release: `build` trains it through the study's own stages and writes
it (`interpgpt release build`); `verify` checks it file by file and loads it every way
(`interpgpt release verify`). Its on-disk format is `interpgpt.artifacts.release`."""
