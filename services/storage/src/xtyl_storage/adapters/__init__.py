"""adapters of the storage service."""
