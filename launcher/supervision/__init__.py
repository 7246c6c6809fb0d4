"""Process supervision: child processes, their trees, the watchdog, the fork server, memory checks."""
