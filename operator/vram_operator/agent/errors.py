"""The agent's error type for bad input (arguments, simulated profile)."""

from __future__ import annotations


class AgentConfigError(ValueError):
    """Input the agent cannot use; `field` names the offending setting or profile field.

    The message is one line meant for a person; the CLI prints it and exits with code 2.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
