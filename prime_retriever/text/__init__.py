"""Text: encoders, the on-disk embedding cache, documents and corpus files."""
