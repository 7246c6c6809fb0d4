"""The gossip engines: node processes (local, packed, Ray actors) and the consensus observer."""
