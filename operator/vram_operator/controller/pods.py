"""What the operator needs from a server's pods (kept in a kopf index, read by the timer)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vram_operator.api.inference_server import ReplicaPlacementStatus
from vram_operator.render.deployment import BUDGET_ANNOTATION, GPUS_ANNOTATION

CRASH_REASONS = frozenset({"CrashLoopBackOff", "Error", "OOMKilled"})
# Degraded reason of a pod that keeps crashing for a reason the operator cannot correct.
ENGINE_CRASHING = "EngineCrashing"
CRASH_MESSAGE_MAX = 300


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
    node: str = ""  # spec.nodeName: empty while the pod is not scheduled
    gpus: str = ""  # the GPU UUIDs its template was rendered for (comma-separated, vram.dev/gpus)
    budget_mib: str = ""  # the budget its template was rendered with (vram.dev/budget-mib)
    terminating: bool = False  # deletion requested: it may still hold its GPU memory

    def runs_on(self, node: str, gpus: Sequence[str], budget_mib: float) -> bool:
        """The pod was rendered for this placement and scheduled onto its node."""
        return self.node == node and self.gpus == ",".join(gpus) and self.budget_mib == str(int(budget_mib))


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    meta = pod.get("metadata", {})
    annotations = meta.get("annotations") or {}
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
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        gpus=str(annotations.get(GPUS_ANNOTATION, "")),
        budget_mib=str(annotations.get(BUDGET_ANNOTATION, "")),
        terminating=bool(meta.get("deletionTimestamp")),
    )


def readiness(pods: Iterable[PodFacts], replicas: int) -> tuple[bool, str]:
    """Ready when `replicas` pods are ready; the message counts them. The caller passes the pods of
    the current placement only (an old pod still Ready after a move is not the server being Ready)."""
    listed = [pod for pod in pods if not pod.terminating]
    ready = sum(1 for pod in listed if pod.ready)
    return ready >= replicas > 0, f"{ready}/{replicas} pods ready"


def current_pods(pods: Iterable[PodFacts], placements: Iterable[ReplicaPlacementStatus]) -> list[PodFacts]:
    """The pods rendered for one of these placements (a pod of an older placement is left out)."""
    wanted = [(p.node, [g.uuid for g in p.gpus], p.budget_mib) for p in placements]
    return [pod for pod in pods if any(pod.runs_on(*where) for where in wanted)]


def crash_report(pods: Iterable[PodFacts]) -> str | None:
    """The Degraded message for pods that crash for a reason no correction applies to (a lost device,
    a bad image, a failing engine): which pod, how often, and the end of its last message. None when
    no pod crashes now (a pod that crashed once and runs ready again is not crashing)."""
    crashing = [pod for pod in pods if pod.crashing and not pod.ready]
    if not crashing:
        return None
    pod = max(crashing, key=lambda p: p.restarts)
    last = pod.termination_message.strip().splitlines()[-1:] or ["no termination message"]
    return f"pod {pod.name} crashing ({pod.restarts} restarts): {last[0][-CRASH_MESSAGE_MAX:]}"
