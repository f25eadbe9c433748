"""User-facing errors.

Everything a user can get wrong (a path, a size, a parameter out of range, a corrupt file) is raised as
:class:`ShanshuiError`. The CLI prints its message on one line and exits with code 2; Python callers can
catch it as a ``ValueError``.
"""

from __future__ import annotations


class ShanshuiError(ValueError):
    """Bad input from the user: the message names the value and what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ShanshuiError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ShanshuiError(message)
