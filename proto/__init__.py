"""The gossip wire protocol: gossip.proto and its generated gRPC stubs."""
