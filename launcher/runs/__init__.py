"""What every engine of a run shares with the experiments above it: the engines' registries
(engines.py), the results folder, the progress bars and the outcome (how the run ended)."""
