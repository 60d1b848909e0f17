"""The operator's kopf registry: the handler modules register into it at import."""

from __future__ import annotations

import kopf

REGISTRY = kopf.OperatorRegistry()
