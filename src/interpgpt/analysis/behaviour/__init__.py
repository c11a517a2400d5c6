"""Behaviour of a trained pair on held-out tasks: do the models decompose as trained, also
for kinds of task they never saw? The metrics (`metrics`) and the study stage (`run`)."""
