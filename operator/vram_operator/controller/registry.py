"""The operator's kopf registry: the handler modules register into it at import.

Every handler kopf calls per watch event (indexes, event, change and delete handlers) is a
coroutine: kopf hands a plain function to a thread and awaits it through a shielded task, which at
a thousand objects costs more than the handler itself and queues each event behind whatever else
holds those threads. Handlers that block (API calls) move that part to a thread themselves.
"""

from __future__ import annotations

import kopf

REGISTRY = kopf.OperatorRegistry()
