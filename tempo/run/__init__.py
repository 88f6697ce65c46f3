"""The pieces of a Lightning run: the generic module, callbacks, checkpoints, loggers, schedules, checks."""
