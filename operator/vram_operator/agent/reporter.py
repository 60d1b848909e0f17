"""Writes GpuNode/<node>.status: only on change or at the heartbeat interval, with backoff on errors.

The thin I/O edge of the agent. The API object is kubernetes.client.CustomObjectsApi (or a fake
offering the same three calls); errors never propagate, so the agent keeps polling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from vram_operator.agent.status import comparable
from vram_operator.api.base import API_VERSION, GROUP, VERSION
from vram_operator.api.gpu_node import GpuNode, GpuNodeStatus

log = logging.getLogger(__name__)

# Every status key, so a merge patch can clear the ones the new status leaves out.
_STATUS_KEYS = tuple(f.alias or name for name, f in GpuNodeStatus.model_fields.items())


class Outcome(Enum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"  # nothing but the heartbeat changed, and the heartbeat is not due
    BACKING_OFF = "backing-off"  # a previous write failed; the next try is not due yet
    FAILED = "failed"


@dataclass(frozen=True)
class Backoff:
    """Delays after consecutive failures: base, 2 x base, 4 x base, ... up to cap (seconds)."""

    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** max(failures - 1, 0)))


def _status_code(error: Exception) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


class GpuNodeReporter:
    """Keeps GpuNode/<node_name>.status up to date through a CustomObjectsApi."""

    def __init__(
        self,
        api: Any,
        node_name: str,
        *,
        heartbeat_s: float = 60.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._node_name = node_name
        self._heartbeat_s = heartbeat_s
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._written: dict[str, Any] | None = None  # last written status, heartbeat left out
        self._written_at: float | None = None
        self._failures = 0
        self._retry_at = 0.0

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def report(self, status: GpuNodeStatus) -> Outcome:
        now = self._clock()
        if self._failures and now < self._retry_at:
            return Outcome.BACKING_OFF
        key = comparable(status)
        heartbeat_due = self._written_at is None or now - self._written_at >= self._heartbeat_s
        if key == self._written and not heartbeat_due:
            return Outcome.UNCHANGED
        try:
            self._write(status)
        except Exception as error:  # API errors, timeouts, refused connections: log, back off, go on
            self._failures += 1
            delay = self._backoff.delay(self._failures)
            self._retry_at = now + delay
            log.warning(
                "writing GpuNode/%s status failed (%d in a row), next try in %.0f s: %s",
                self._node_name,
                self._failures,
                delay,
                error,
            )
            return Outcome.FAILED
        self._failures = 0
        self._written, self._written_at = key, now
        return Outcome.WRITTEN

    def _patch(self, status: GpuNodeStatus) -> None:
        wire = status.wire()
        body = {"status": {key: wire.get(key) for key in _STATUS_KEYS}}
        self._api.patch_cluster_custom_object_status(GROUP, VERSION, GpuNode.plural, self._node_name, body)

    def _write(self, status: GpuNodeStatus) -> None:
        try:
            self._patch(status)
        except Exception as error:
            if _status_code(error) != 404:
                raise
            self._create()
            self._patch(status)

    def _create(self) -> None:
        body = {"apiVersion": API_VERSION, "kind": GpuNode.kind_name, "metadata": {"name": self._node_name}, "spec": {}}
        try:
            self._api.create_cluster_custom_object(GROUP, VERSION, GpuNode.plural, body)
            log.info("created GpuNode/%s", self._node_name)
        except Exception as error:
            if _status_code(error) != 409:  # created meanwhile by someone else: fine
                raise
