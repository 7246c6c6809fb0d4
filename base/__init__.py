"""The low layer: signals, ports, polling, seeding and the Flower message contract.

Every part of fedgossip may import it; it imports nothing of fedgossip above it."""
