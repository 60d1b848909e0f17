"""The handlers kopf calls per watch event run in the event loop, not in kopf's threads."""

from __future__ import annotations

import inspect

import vram_operator.controller.main  # noqa: F401  (registers every handler)
from vram_operator.controller.registry import REGISTRY


def test_every_per_event_handler_is_a_coroutine() -> None:
    """kopf runs a plain function in a thread (one hop and one shielded task per event and handler):
    a flood of created servers then queues its indexing behind the threads' other work."""
    registries = (REGISTRY._indexing, REGISTRY._watching, REGISTRY._changing)
    handlers = [handler for registry in registries for handler in registry.get_all_handlers()]
    assert {handler.id for handler in handlers} >= {"inference_servers", "gpu_nodes", "server_pods", "gone"}
    in_threads = [
        f"{handler.fn.__module__}.{handler.id}" for handler in handlers if not inspect.iscoroutinefunction(handler.fn)
    ]
    assert in_threads == []
