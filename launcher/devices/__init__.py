"""Deployments on real devices: bundles (one folder per device) and collecting their records."""
