"""Known answers: the break rule the ADHD corpus planted, looked for in the models
(`probing`: where its variables live; `interchange`: whether `remaining` is used; `run`:
files, figures, the study stage)."""
