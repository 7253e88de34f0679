"""Vector stores: the VectorStore protocol, retry plumbing, Qdrant (local mode and server) and Qdrant Edge."""
