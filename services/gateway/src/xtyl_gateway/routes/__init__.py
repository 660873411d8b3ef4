"""routes of the gateway."""
