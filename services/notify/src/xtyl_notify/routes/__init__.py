"""routes of the notify service."""
