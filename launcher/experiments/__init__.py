"""Experiments: one run end to end, sweeps, reproductions, the results folder and progress."""
