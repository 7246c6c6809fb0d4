"""A gossip peer's transport: wire format, senders, the gRPC service, identity and security."""
