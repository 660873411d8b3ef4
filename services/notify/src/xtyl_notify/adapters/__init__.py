"""adapters of the notify service."""
