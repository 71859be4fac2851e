"""The one error type that reaches the user."""

from __future__ import annotations


class DockerUpError(Exception):
    """A failure the user can act on: what went wrong, and what to do about it."""

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra lines (a helper's log tail, say) shown under the message.
        self.detail = detail

    def __str__(self) -> str:
        return self.message
