"""What the operator needs from a server's pods (kept in a kopf index, read by the timer)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CRASH_REASONS = frozenset({"CrashLoopBackOff", "Error", "OOMKilled"})


@dataclass(frozen=True)
class PodFacts:
    uid: str
    name: str
    namespace: str
    ready: bool
    restarts: int
    crashing: bool  # waiting in CrashLoopBackOff or last terminated with an error
    container: str  # the first container (the engine)
    termination_message: str  # last terminated state's message (FallbackToLogsOnError gives the log tail)


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    conditions = status.get("conditions", []) or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    containers = status.get("containerStatuses", []) or []
    engine = containers[0] if containers else {}
    waiting = (engine.get("state") or {}).get("waiting") or {}
    terminated = (
        (engine.get("lastState") or {}).get("terminated") or (engine.get("state") or {}).get("terminated") or {}
    )
    crashing = waiting.get("reason") in CRASH_REASONS or (bool(terminated) and terminated.get("exitCode", 0) != 0)
    spec_containers = (pod.get("spec") or {}).get("containers") or [{}]
    return PodFacts(
        uid=str(meta.get("uid", "")),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        ready=ready,
        restarts=int(engine.get("restartCount", 0) or 0),
        crashing=crashing,
        container=str(engine.get("name") or spec_containers[0].get("name", "")),
        termination_message=str(terminated.get("message", "") or ""),
    )


def readiness(pods: Iterable[PodFacts], replicas: int) -> tuple[bool, str]:
    """Ready when `replicas` pods are ready; the message counts them."""
    listed = list(pods)
    ready = sum(1 for pod in listed if pod.ready)
    return ready >= replicas > 0, f"{ready}/{replicas} pods ready"
