"""routes of the rag service."""
