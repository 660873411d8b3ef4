"""domain of the storage service."""
