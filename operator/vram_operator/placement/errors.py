"""The one error type of the placement package: input the planner cannot use, named by field."""

from __future__ import annotations


class PlacementError(ValueError):
    """Bad placement input; `field` names the offending input (e.g. `tensor_parallel`).

    The message is one line meant for a person; the CLI prints it and exits with code 2.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
