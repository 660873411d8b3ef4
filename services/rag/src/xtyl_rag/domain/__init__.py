"""domain of the rag service."""
