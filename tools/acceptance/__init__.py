"""Pieces of ``scripts/gpu_acceptance.py``: the host-sync counter, the check runner and the checks."""
