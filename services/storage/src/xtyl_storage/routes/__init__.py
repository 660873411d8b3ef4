"""routes of the storage service."""
