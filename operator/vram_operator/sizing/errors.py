"""The one error type of the sizing package: bad or missing input, named by field."""

from __future__ import annotations


class SizingError(ValueError):
    """Input that sizing cannot use; `field` names the offending input (e.g. `num_hidden_layers`).

    The message is one line meant for a person; the CLI prints it and exits with code 2.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
