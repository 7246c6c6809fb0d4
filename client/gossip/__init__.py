"""The gossip peer: its round schedules, merge plan and inbox; the transport is `transport/`."""
