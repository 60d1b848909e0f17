"""State shared by the handlers of one operator process, and small helpers they all use."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus
from vram_operator.controller.batching import DecisionBatcher
from vram_operator.controller.book import ReservationBook
from vram_operator.controller.child_gate import ChildGate
from vram_operator.controller.diffbase import MemoryDiffBase
from vram_operator.controller.gpu_health import capacity_grew
from vram_operator.controller.kube import KubePort
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.settings import ControllerSettings
from vram_operator.placement.inventory import SlotCache
from vram_operator.sizing.measured import MeasuredRun

RESOURCE_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
MAX_RETRY_SECONDS = 60.0
INDEX_NAMES = (
    "inference_servers",
    "gpu_nodes",
    "server_pods",
    "gpu_assignments",
    "server_deployments",
    "server_services",
    "unschedulable_nodes",
    "device_plugin_nodes",
)


# Decided statuses in flight at once. A status write waits ~0.1-0.4 s on a busy API server (and etcd):
# with 8 threads, a flood's decisions queued for them (2.3 s median in a flood of 1,000 servers, the
# bulk of a decision's latency); 32 keep the queue empty at ~90 decisions a second.
STATUS_WRITE_THREADS = 32
# Children are applied by a few threads of their own (admitted by the ChildGate).
CHILD_APPLY_THREADS = 8


@dataclass
class Runtime:
    settings: ControllerSettings
    kube: KubePort
    metrics: Metrics
    book: ReservationBook = field(default_factory=ReservationBook)
    # The GPUs of each unchanged GpuNode as the planner sees them, kept from one batch to the next.
    slot_cache: SlotCache = field(default_factory=SlotCache)
    batcher: DecisionBatcher = field(init=False)
    # What kopf last handled of each object (a creation or a change, not a status write).
    diffbase: MemoryDiffBase = field(default_factory=MemoryDiffBase)
    # Threads of their own for writing decided statuses (the state of record): a decision is not
    # kept waiting behind the children of the servers decided before it, which use the default ones.
    status_writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(STATUS_WRITE_THREADS, thread_name_prefix="status-write")
    )
    child_writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CHILD_APPLY_THREADS, thread_name_prefix="child-apply")
    )
    # Admits child applies to that pool: none while decisions are pending (but one that waited long), else all.
    child_gate: ChildGate = field(default_factory=lambda: ChildGate(CHILD_APPLY_THREADS))
    # One lock per server: its reconcile and its runtime check never write its status at once.
    server_locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # The last status this process wrote per server: newer than the watch until the event arrives.
    written: dict[str, tuple[str | None, InferenceServerStatus]] = field(default_factory=dict)
    # Unplaced servers retry with exponential backoff (attempts, monotonic time of the next try);
    # cleared when capacity frees (a server is deleted), so a full fleet is not re-planned every tick.
    retry_unplaced: dict[str, tuple[int, float]] = field(default_factory=dict)
    # When each missing GpuNode was first seen missing (unknown for a grace period, then lost).
    missing_since: dict[str, datetime] = field(default_factory=dict)
    # Per node, per GPU UUID: the MiB it could hold at its last report (to notice capacity appear).
    capacity: dict[str, dict[str, float]] = field(default_factory=dict)
    # Per server key: the child the API server refused, and its message (Degraded ChildRejected).
    refused: dict[str, str] = field(default_factory=dict)
    # Per server key: the children its last reconcile applied, by (kind, name): what they must stay.
    applied: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    # Per server key, per pod UID: how often its start-up log was read for the engine's report.
    logs_read: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per server key: the pod whose run was last kept as a measured run (once per pod).
    runs_recorded: dict[str, str] = field(default_factory=dict)
    # Measured runs by settings key, read from their ConfigMap before each decision.
    measured: dict[str, list[MeasuredRun]] = field(default_factory=dict)
    # kopf's indexes (live objects), captured from the first handler call, for the periodic checks.
    indexes: dict[str, Any] = field(default_factory=dict)
    # Periodic checks (servers, assignments), run one after the other every check interval.
    checks: list[Callable[[Mapping[str, Any]], Awaitable[None]]] = field(default_factory=list)
    background: asyncio.Task[None] | None = None

    def remember_indexes(self, kwargs: Mapping[str, Any]) -> None:
        """Keep kopf's indexes and start the checks, from a handler: the task inherits the
        handler's context, which kopf's event posting needs."""
        if not self.indexes:
            self.indexes.update({name: kwargs[name] for name in INDEX_NAMES if name in kwargs})
        if self.background is None:
            self.background = asyncio.create_task(self.run_checks())

    async def run_checks(self) -> None:
        """Forever: every check interval, run the periodic checks once the indexes are known.

        One loop instead of kopf timers: timers put a finalizer on every object (deletion would
        wait for a running operator) and cost one task per object.
        """
        while True:
            await asyncio.sleep(self.settings.check_interval)
            if len(self.indexes) == len(INDEX_NAMES):
                for check in self.checks:
                    await check(self.indexes)

    def forget(self, key: str) -> None:
        """A server was deleted: forget what this process keeps about it; its memory is free now,
        so unplaced servers may fit."""
        self.written.pop(key, None)
        self.refused.pop(key, None)
        self.applied.pop(key, None)
        self.logs_read.pop(key, None)
        self.runs_recorded.pop(key, None)
        self.retry_unplaced.clear()
        self.server_locks.pop(key, None)
        namespace, _, name = key.partition("/")
        self.metrics.forget_server(namespace or "default", name)

    def note_capacity(self, node: str, capacity: dict[str, float]) -> None:
        """Record a node's capacity; when it grew, unplaced servers are tried again at the next check."""
        if capacity_grew(self.capacity.get(node, {}), capacity):
            self.retry_unplaced.clear()
        self.capacity[node] = capacity

    def retry_due(self, key: str, moment: float) -> bool:
        attempts_and_time = self.retry_unplaced.get(key)
        return attempts_and_time is None or moment >= attempts_and_time[1]

    def record_unplaced(self, key: str, moment: float, placed: bool) -> None:
        if placed:
            self.retry_unplaced.pop(key, None)
            return
        attempts = self.retry_unplaced.get(key, (0, 0.0))[0] + 1
        delay = min(MAX_RETRY_SECONDS, self.settings.check_interval * 2**attempts)
        self.retry_unplaced[key] = (attempts, moment + delay)

    def __post_init__(self) -> None:
        self.batcher = DecisionBatcher(self.book)

    def share_written(self, server: InferenceServer) -> None:
        """The watch brought the server back: where its status is the one this process last wrote,
        `written` keeps the watched (equal) object, so one copy of the status is held, not two."""
        mine = self.written.get(server.key)
        status = server.status
        if mine is not None and status is not None and mine[0] == server.metadata.uid and mine[1] == status:
            self.written[server.key] = (mine[0], status)

    def latest_status(self, server: InferenceServer) -> InferenceServerStatus | None:
        """The status to build on: what we last wrote for this object version, else the stored one."""
        mine = self.written.get(server.key)
        if mine is not None and mine[0] == server.metadata.uid:
            return mine[1]
        return server.status


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """The resource fields of a kopf body as plain dicts (kopf bodies are live views), without
    `metadata.managedFields`: the API server's record of which client wrote which field, which
    nothing here reads and which is most of a decided server's metadata, kept per object in the
    indexes (about a quarter of a decided server's model)."""
    return {key: (_meta if key == "metadata" else _thaw)(body[key]) for key in RESOURCE_FIELDS if key in body}


def _meta(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _thaw(value) for key, value in metadata.items() if key != "managedFields"}


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def parse_server(body: Mapping[str, Any]) -> InferenceServer:
    """The InferenceServer model of a body; a status we cannot read is dropped, not fatal."""
    data = plain(body)
    try:
        return InferenceServer.model_validate(data)
    except ValidationError:
        if "status" not in data:
            raise
        data.pop("status")
        return InferenceServer.model_validate(data)


def parse_node(body: Mapping[str, Any]) -> GpuNode | None:
    try:
        return GpuNode.model_validate(plain(body))
    except ValidationError:
        return None


def first_error(error: ValidationError) -> str:
    """One line naming the field: "spec.model: model is required for vllm and llamacpp"."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "__root__")
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def values(index: Mapping[Any, Iterable[Any]]) -> list[Any]:
    """Every value of a kopf index (each key holds a store of values)."""
    return [value for store in index.values() for value in store]
