"""The one exception type that stages turn into a clean, non-zero exit.

A `UserError` is a mistake the user can fix (bad config, missing or corrupt artifact, dataset absent offline):
its message names the thing and the fix. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """An error in the user's input or artifacts; the message says what and how to fix it."""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """Build the error for an unknown name (method, dataset, backbone, ...) listing the valid choices."""
    valid = ", ".join(sorted(choices))
    return UserError(f"unknown {kind} {name!r}; valid {kind}s: {valid}")
