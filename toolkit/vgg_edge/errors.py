"""The one exception type a user sees: a one-line message that names the file and the fix."""

from __future__ import annotations


class VggEdgeError(Exception):
    """A problem with the user's input or environment; the CLI prints it without a traceback."""


def check_range(option: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Refuse `value` outside [low, high] in one line that names the option (the configs' validation)."""
    if (low is not None and value < low) or (high is not None and value > high):
        wanted = f"between {low} and {high}" if low is not None and high is not None else f"at least {low}" if low is not None else f"at most {high}"
        raise VggEdgeError(f"{option} {value}: must be {wanted}")
