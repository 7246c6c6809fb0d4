"""A run's network of emulated hosts: the hosts of its node processes (hosts.py) and the kernel's
shaping of the links between them (shaping.py)."""
