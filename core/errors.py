"""The one error type every user-visible failure is raised as."""

from __future__ import annotations


class UserFacingError(Exception):
    """A failure explained to the user in one sentence.

    `message` is shown in chat or on the terminal; `detail` goes to the log only and
    must never contain a secret.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message
