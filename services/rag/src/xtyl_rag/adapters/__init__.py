"""adapters of the rag service."""
