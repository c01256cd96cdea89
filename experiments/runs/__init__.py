"""Run management: from a config to a locked, checked run directory (launch, build, identity, lock, the
run-directory rule, devices and GPU slots, Slurm requeue). May import tasks/ and train/."""
