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


class StoreError(UserFacingError):
    """The database would not take a write (a full disk, a read-only file); nothing of the
    operation was kept. The same operation may work once the fault is cleared."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "I could not save this: the bot's database is not taking writes right now; try "
            "again in a few minutes (whoever runs the bot can see why on its /healthz page).",
            detail=detail,
        )


class Undeliverable(Exception):
    """An adapter found no place that takes a result (the reason says why); trying again
    would not change that, so the service gives up at once."""
