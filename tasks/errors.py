"""The project's own error types: what the user can fix, and what no retry can help.

The CLI turns an `InputError` into one line and exit 2; any other exception is a bug and keeps
its traceback. `Stages` retries a step's transient failures but never a `FinalError`.
"""

from __future__ import annotations


class FinalError(Exception):
    """A failure that a retry cannot change (a missing topic, a refused schema)."""


class InputError(FinalError, ValueError):
    """Input the user can fix: an option, a file, a schema or a setting that cannot work."""


def is_final(exc: BaseException) -> bool:
    """True when retrying the step that raised `exc` would only repeat it."""
    return isinstance(exc, FinalError)
