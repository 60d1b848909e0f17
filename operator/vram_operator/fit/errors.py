"""The one error type of the fit package: an engine setting that cannot be used, named by field."""

from __future__ import annotations


class FitError(ValueError):
    """Bad fitting input; `field` names the offending input (e.g. `gpuMemoryUtilization`).

    The message is one line meant for a person; the CLI prints it and exits with code 2.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
