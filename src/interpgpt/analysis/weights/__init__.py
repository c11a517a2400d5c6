"""The pair in weight space: change from the shared init, head matching, linear mode
connectivity (`compare`: pure functions on any two TaskGPTs of one shape), and the config,
shared-init check, run and report (`run`)."""
