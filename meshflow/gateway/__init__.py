"""The gateway: traversal engine over the Flow graph, and its gRPC door."""
