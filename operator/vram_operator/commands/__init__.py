"""Implementations of the CLI verbs (I/O and output only; the decisions live in the core)."""
