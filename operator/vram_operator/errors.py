"""Errors the CLI reports as one line and exit code 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: names the file (when there is one) and the field."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.field = field
        location = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{location}: {message}" if location else message)
