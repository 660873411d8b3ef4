"""domain of the gateway."""
