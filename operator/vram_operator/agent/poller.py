"""One poll of the node: read the GPUs, attribute processes, build the status, publish it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from vram_operator import __version__
from vram_operator.agent.attribution import IdentityReader
from vram_operator.agent.exporter import AgentMetrics
from vram_operator.agent.pods import PodDirectory, PodInfo
from vram_operator.agent.reporter import GpuNodeReporter, Outcome
from vram_operator.agent.snapshot import GpuBackend
from vram_operator.agent.status import build_status
from vram_operator.api.gpu_node import GpuNodeStatus

log = logging.getLogger(__name__)


def rfc3339(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Agent:
    """Wires a backend to /proc attribution, the pod directory, the exporter and the reporter.

    pods, metrics and reporter are optional so that a metrics-only agent (no API access) and the
    benchmark can run the same poll.
    """

    def __init__(
        self,
        backend: GpuBackend,
        *,
        proc_root: Path,
        pods: PodDirectory | None = None,
        metrics: AgentMetrics | None = None,
        reporter: GpuNodeReporter | None = None,
        wall_clock: Callable[[], float] = time.time,
        agent_version: str = __version__,
    ) -> None:
        self._backend = backend
        self._identities = IdentityReader(proc_root)
        self._pods = pods
        self._metrics = metrics
        self._reporter = reporter
        self._wall_clock = wall_clock
        self._agent_version = agent_version
        self.last_status: GpuNodeStatus | None = None

    def _pod_index(self, uids: set[str]) -> Mapping[str, PodInfo]:
        return self._pods.lookup(uids) if self._pods is not None else {}

    def poll_once(self) -> GpuNodeStatus | None:
        """Poll and publish; returns the status built, or None when the poll itself failed."""
        started = time.perf_counter()
        try:
            snapshot = self._backend.snapshot()
            unknown = [p.pid for g in snapshot.gpus for p in g.processes if p.owner is None]
            identities = self._identities.read(unknown)
            uids = {i.owner.pod_uid for i in identities.values() if i.owner and i.owner.pod_uid}
            status = build_status(
                snapshot,
                identities,
                self._pod_index(uids),
                now=rfc3339(self._wall_clock()),
                agent_version=self._agent_version,
                previous=self.last_status,
            )
        except Exception:  # a bug or an unforeseen backend failure must not stop the agent
            log.exception("poll failed")
            if self._metrics is not None:
                self._metrics.count_error("poll")
                self._metrics.observe_poll(
                    None, read_ok=False, duration_s=time.perf_counter() - started, now=self._wall_clock()
                )
            return None
        self.last_status = status
        if self._metrics is not None:
            failed_reads = len(snapshot.errors) + (0 if snapshot.available else 1)
            if failed_reads:
                self._metrics.count_error("backend", failed_reads)
            self._metrics.observe_poll(
                status,
                read_ok=snapshot.available,
                duration_s=time.perf_counter() - started,
                now=self._wall_clock(),
            )
        if self._reporter is not None and self._reporter.report(status) is Outcome.FAILED and self._metrics:
            self._metrics.count_error("api")
        return status
