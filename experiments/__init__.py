"""The engine of the harness: trainer, tasks, LR schedule, run directories."""
