"""The one error type of the render package: inputs that cannot make a valid workload."""

from __future__ import annotations


class RenderError(ValueError):
    """A placement or server that cannot be rendered; `field` names the offending input.

    The message is one line meant for a person; the CLI prints it and exits with code 2. `reason`
    is the CamelCase condition reason the operator reports it under.
    """

    def __init__(self, message: str, *, field: str, reason: str = "RenderFailed") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = reason
