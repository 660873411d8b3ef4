"""adapters of the gateway."""
