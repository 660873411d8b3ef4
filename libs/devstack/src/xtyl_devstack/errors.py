"""The errors of the local stack. ``str(error)`` is a one-line summary, then the log tail."""

from __future__ import annotations


class DevstackError(RuntimeError):
    """Something in the local stack could not be done."""


class ServerStartError(DevstackError):
    """A server or service did not come up; the message ends with the tail of its log."""
