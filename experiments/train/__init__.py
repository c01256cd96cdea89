"""Training: everything Trainer.fit() needs (the loop, checkpoints, records, the Task protocol, loaders,
seeding, the LR schedule, stop signals, collectives). Imports nothing from tasks/ or runs/."""
