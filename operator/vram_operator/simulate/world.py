"""The simulated fleet between two ticks (pure): fake nodes, the engines playing in pods, their memory.

The runtime (runtime.py) reads pods and nodes from the API, asks `World` what each engine does and
writes back what it answers: GpuNode statuses (as the agent's simulated backend would report them),
pod statuses for engines that crash, and the state file.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from vram_operator.agent.simulated import SimulatedGpu, SimulatedProcess, SimulatedProfile
from vram_operator.render.metadata import SERVER_LABEL
from vram_operator.simulate.engines import EngineRun, GpuAtStart, Launch, Perturbation, play
from vram_operator.simulate.faults import Faults

# Set on the fake nodes by the local cluster (hack/localcluster/fleet.py), which the package cannot import.
FAKE_NODE_LABEL = "vram.dev/fake-node"
FAKE_GPUS_ANNOTATION = "vram.dev/fake-gpus"
LOST_GPU_MESSAGE = "RuntimeError: CUDA error: unspecified launch failure (the GPU fell off the bus: Xid 79)"
NO_DEVICE_MESSAGE = "RuntimeError: CUDA error: no CUDA-capable device is detected"


@dataclass(frozen=True)
class FakeGpu:
    index: int
    uuid: str
    product: str
    total_mib: float


@dataclass(frozen=True)
class FakeNode:
    name: str
    gpus: tuple[FakeGpu, ...]


def parse_fake_gpus(node_name: str, annotation: str) -> FakeNode:
    """A node's GPUs from its `vram.dev/fake-gpus` annotation (JSON list of index/product/memoryMiB/uuid)."""
    listed = sorted(json.loads(annotation), key=lambda gpu: int(gpu["index"]))
    return FakeNode(
        node_name,
        tuple(
            FakeGpu(int(g["index"]), str(g["uuid"]), str(g["product"]).replace("-", " "), float(g["memoryMiB"]))
            for g in listed
        ),
    )


@dataclass(frozen=True)
class PodView:
    """What the runtime needs of one pod bound to a fake node."""

    uid: str
    namespace: str
    name: str
    node: str
    server: str | None
    container: str
    image: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    gpu_uuids: tuple[str, ...]
    running: bool  # KWOK moved it to Running (it is "started")
    created: str

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)


def _visible(env: Mapping[str, str], claim_uuids: Sequence[str]) -> tuple[str, ...]:
    listed = env.get("NVIDIA_VISIBLE_DEVICES", "")
    if listed and listed not in ("all", "none", "void"):
        return tuple(part.strip() for part in listed.split(",") if part.strip())
    return tuple(claim_uuids)


def pod_view(pod: Mapping[str, Any], claim_uuids: Mapping[str, str] | None = None) -> PodView:
    """A pod (as the API returns it, camelCase) seen by the twin; `claim_uuids`: ResourceClaim -> GPU UUID."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    container = (spec.get("containers") or [{}])[0]
    env = {str(e["name"]): str(e.get("value", "")) for e in container.get("env") or [] if "value" in e}
    claims = [c.get("resourceClaimName") for c in spec.get("resourceClaims") or []]
    by_claim = claim_uuids or {}
    return PodView(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        node=str(spec.get("nodeName") or ""),
        server=(meta.get("labels") or {}).get(SERVER_LABEL),
        container=str(container.get("name", "")),
        image=str(container.get("image", "")),
        args=tuple(str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]),
        env=env,
        gpu_uuids=_visible(env, [by_claim[c] for c in claims if c in by_claim]),
        running=status.get("phase") == "Running" and not meta.get("deletionTimestamp"),
        created=str(meta.get("creationTimestamp", "")),
    )


def process_id(pod_uid: str, rank: int) -> int:
    """A stable PID for an engine process (one per GPU it uses)."""
    return 10_000 + (zlib.crc32(f"{pod_uid}/{rank}".encode()) % 4_000_000)


@dataclass(frozen=True)
class Backoff:
    """kubelet's CrashLoopBackOff: initial, doubling per crash, capped (seconds)."""

    initial_s: float = 10.0
    max_s: float = 300.0

    def delay(self, crashes: int) -> float:
        return float(min(self.max_s, self.initial_s * 2 ** max(crashes - 1, 0)))


@dataclass(frozen=True)
class EngineState:
    """One pod's engine: its last run, how often it crashed, when kubelet would start it again."""

    pod: PodView
    engine: str
    run: EngineRun
    crashes: int = 0
    restart_at: float | None = None  # monotonic seconds; set while in CrashLoopBackOff
    backoff_s: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    last_error: str = ""  # the last crash's log tail (kept in lastState after a recovery)
    last_exit_code: int = 0

    @property
    def phase(self) -> Literal["Running", "CrashLoopBackOff"]:
        return "Running" if self.run.running else "CrashLoopBackOff"


@dataclass
class World:
    """Engines per pod UID; `step` advances them to `now` against the pods and faults given."""

    perturbation: Perturbation = field(default_factory=Perturbation)
    backoff: Backoff = field(default_factory=Backoff)
    engines: dict[str, EngineState] = field(default_factory=dict)

    def used_on(self, uuid: str) -> float:
        return sum(s.run.used_mib.get(uuid, 0.0) for s in self.engines.values() if s.run.running)

    def step(
        self,
        nodes: Sequence[FakeNode],
        pods: Iterable[PodView],
        launches: Mapping[str, Launch],
        faults: Faults,
        *,
        now: float,
        stamp: str,
    ) -> list[EngineState]:
        """Advance every engine; the states whose pod status must be written (a crash, a recovery).

        `launches` maps pod UID -> what its container starts; a pod without one starts nothing (its
        server is unknown), but an engine already running keeps running while its pod does.
        A pod gone (or on a gone node) loses its engine; a pod seen Running for the first time
        starts; a crashed one starts again once its back-off has passed; a running one on a GPU
        that was lost crashes.
        """
        gpus = {gpu.uuid: (node, gpu) for node in nodes for gpu in node.gpus}
        names = {n.name for n in nodes}
        live = {pod.uid: pod for pod in pods if pod.running and pod.node in names and not faults.node(pod.node).gone}
        self.engines = {uid: state for uid, state in self.engines.items() if uid in live}
        changed: list[EngineState] = []
        for pod in sorted(live.values(), key=lambda p: p.order):
            state = self.engines.get(pod.uid)
            lost = [u for u in pod.gpu_uuids if u in gpus and faults.gpu(gpus[u][0].name, gpus[u][1].index).lost]
            if state is not None and state.run.running:
                if lost:
                    crashed = EngineRun(error=LOST_GPU_MESSAGE, exit_code=1)
                    state = self._crashed(state, crashed, now=now, stamp=stamp)
                    changed.append(state)
                continue
            launch = launches.get(pod.uid)
            if launch is None or (state is not None and state.restart_at is not None and now < state.restart_at):
                continue
            run = (
                EngineRun(error=NO_DEVICE_MESSAGE, exit_code=1)
                if lost or any(u not in gpus for u in pod.gpu_uuids)
                else play(launch, self._at_start(pod, gpus, faults), self.perturbation)
            )
            if state is None:
                state = EngineState(pod=pod, engine=launch.engine, run=run, started_at=stamp)
                if run.running:
                    self.engines[pod.uid] = state
                    continue
                state = self._crashed(state, run, now=now, stamp=stamp)
            elif run.running:
                state = replace(state, pod=pod, run=run, restart_at=None, started_at=stamp)
                self.engines[pod.uid] = state
            else:
                state = self._crashed(replace(state, pod=pod), run, now=now, stamp=stamp)
            changed.append(state)
        return changed

    def _crashed(self, state: EngineState, run: EngineRun, *, now: float, stamp: str) -> EngineState:
        crashes = state.crashes + 1
        delay = self.backoff.delay(crashes)
        crashed = replace(
            state,
            run=run,
            crashes=crashes,
            restart_at=now + delay,
            backoff_s=delay,
            finished_at=stamp,
            last_error=run.error or "",
            last_exit_code=run.exit_code,
        )
        self.engines[state.pod.uid] = crashed
        return crashed

    def _at_start(self, pod: PodView, gpus: Mapping[str, tuple[FakeNode, FakeGpu]], faults: Faults) -> list[GpuAtStart]:
        seen = []
        for uuid in pod.gpu_uuids:
            node, gpu = gpus[uuid]
            foreign = faults.gpu(node.name, gpu.index).foreign_total_mib
            free = max(gpu.total_mib - foreign - self.used_on(uuid), 0.0)
            seen.append(GpuAtStart(uuid=uuid, total_mib=gpu.total_mib, free_mib=free, name=gpu.product))
        return seen

    def profile(self, node: FakeNode, faults: Faults, driver_version: str = "simulated") -> SimulatedProfile:
        """The node as the agent's simulated backend reads it: foreign processes and running engines."""
        gpus = []
        for gpu in node.gpus:
            fault = faults.gpu(node.name, gpu.index)
            processes = [SimulatedProcess(pid=p.pid, used_mib=p.used_mib, name=p.name) for p in fault.processes]
            for state in sorted(self.engines.values(), key=lambda s: s.pod.order):
                used = state.run.used_mib.get(gpu.uuid) if state.run.running else None
                if used is None:
                    continue
                rank = state.pod.gpu_uuids.index(gpu.uuid)
                processes.append(
                    SimulatedProcess(
                        pid=process_id(state.pod.uid, rank),
                        used_mib=round(used, 2),
                        pod=f"{state.pod.namespace}/{state.pod.name}",
                        pod_uid=state.pod.uid,
                        container=state.pod.container,
                    )
                )
            gpus.append(
                SimulatedGpu(
                    name=gpu.product,
                    memory_total_mib=gpu.total_mib,
                    uuid=gpu.uuid,
                    healthy=not fault.lost,
                    foreign_mib=fault.foreign_mib,
                    processes=processes,
                )
            )
        return SimulatedProfile(driver_version=driver_version, gpus=gpus)

    def state(self, nodes: Sequence[FakeNode], faults: Faults, *, seed: int, tick: int, stamp: str) -> dict[str, Any]:
        """The state file: per GPU what is really used and by whom; per pod what its engine does."""
        gpus: dict[str, Any] = {}
        for node in nodes:
            for gpu in node.gpus:
                fault = faults.gpu(node.name, gpu.index)
                engines: list[dict[str, Any]] = [
                    {
                        "podUID": s.pod.uid,
                        "namespace": s.pod.namespace,
                        "pod": s.pod.name,
                        "server": s.pod.server,
                        "engine": s.engine,
                        "usedMiB": round(s.run.used_mib[gpu.uuid], 2),
                        "reservedMiB": round(s.run.reserved_mib.get(gpu.uuid, s.run.used_mib[gpu.uuid]), 2),
                    }
                    for s in sorted(self.engines.values(), key=lambda s: s.pod.order)
                    if s.run.running and gpu.uuid in s.run.used_mib
                ]
                foreign = fault.foreign_total_mib
                gpus[gpu.uuid] = {
                    "node": node.name,
                    "index": gpu.index,
                    "totalMiB": gpu.total_mib,
                    "healthy": not fault.lost,
                    "nodeGone": faults.node(node.name).gone,
                    "foreignMiB": round(foreign, 2),
                    "usedMiB": round(foreign + sum(e["usedMiB"] for e in engines), 2),
                    "engines": engines,
                }
        pods = {
            uid: {
                "namespace": s.pod.namespace,
                "name": s.pod.name,
                "node": s.pod.node,
                "server": s.pod.server,
                "engine": s.engine,
                "gpus": list(s.pod.gpu_uuids),
                "state": s.phase,
                "restarts": s.crashes,
                "message": s.run.error or "",
                "usedMiB": {u: round(v, 2) for u, v in s.run.used_mib.items()},
                "reservedMiB": {u: round(s.run.reserved_mib.get(u, v), 2) for u, v in s.run.used_mib.items()},
            }
            for uid, s in sorted(self.engines.items())
        }
        return {"seed": seed, "tick": tick, "time": stamp, "gpus": gpus, "pods": pods}


# --- pod status as kubelet would write it --------------------------------------------------------


def _conditions(ready: bool, container: str, stamp: str) -> list[dict[str, Any]]:
    not_ready = {"reason": "ContainersNotReady", "message": f"containers with unready status: [{container}]"}
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        *(
            {"type": kind, "status": "True" if ready else "False", "lastTransitionTime": stamp}
            | ({} if ready else not_ready)
            for kind in ("ContainersReady", "Ready")
        ),
    ]


def pod_status(state: EngineState, *, stamp: str) -> dict[str, Any]:
    """The pod status patch for an engine that crashed (CrashLoopBackOff) or started again (Running)."""
    pod = state.pod
    last = {
        "terminated": {
            "exitCode": state.last_exit_code,
            "reason": "Error",
            "message": state.last_error,
            "startedAt": state.started_at or stamp,
            "finishedAt": state.finished_at or stamp,
        }
    }
    container: dict[str, Any] = {
        "name": pod.container,
        "image": pod.image,
        "imageID": "",
        "restartCount": state.crashes,
    }
    if state.run.running:
        container |= {"ready": True, "started": True, "state": {"running": {"startedAt": stamp}}, "lastState": last}
    else:
        container |= {
            "ready": False,
            "started": False,
            "state": {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {state.backoff_s:.0f}s restarting failed container={pod.container} "
                    f"pod={pod.name}_{pod.namespace}({pod.uid})",
                }
            },
            "lastState": last,
        }
    return {
        "status": {
            "phase": "Running",
            "conditions": _conditions(state.run.running, pod.container, stamp),
            "containerStatuses": [container],
        }
    }
