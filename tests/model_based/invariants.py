"""The invariants of a settled system, checked from outside: the API objects and the GPUs' truth.

Pure: a Snapshot (plain dicts as the API server returns them, plus the twin's GPU truth) and what the
driver knows it did (Expectations) in, a list of Violations out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from model_based.gpu_facts import EngineUse, GpuTruth, pod_gpus, running

OVER_COMMIT_WORDS = "over-commits"
FOREIGN_GREW = "ForeignMemoryGrew"
# Tolerance for rounding (MiB budgets are written as integers, utilizations with 2-4 decimals).
ROUNDING_MIB = 2.0
# Degraded reasons the operator corrects (auto utilization, a bounded number of times); any other
# Degraded reason (a crash no correction fixes, a refused child) is a converged state with a reason.
CORRECTABLE = frozenset({"NoCacheBlocks", "MaxModelLenTooLarge", "StartupFreeMemory"})
CORRECTIONS_ANNOTATION = "vram.dev/corrections"
MAX_CORRECTIONS = 3  # the operator's --max-corrections default


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


@dataclass(frozen=True)
class Snapshot:
    servers: list[dict[str, Any]]
    deployments: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    gpu_nodes: list[dict[str, Any]]
    assignments: list[dict[str, Any]]
    gpus: list[GpuTruth]
    engine_use: list[EngineUse]


@dataclass(frozen=True)
class Expectations:
    """What the driver knows about the run."""

    usable: frozenset[str]  # GPU UUIDs the run may use (the others are held by foreign processes)
    invalid: frozenset[str] = frozenset()  # "ns/name" of servers whose spec no fleet can serve
    margin_mib: float = 0.0
    spiked: frozenset[str] = frozenset()  # GPUs whose foreign use grew after servers were placed


@dataclass
class Causes:
    """What happened since the last checkpoint that may rightly move a server."""

    respecced: set[str] = field(default_factory=set)  # "ns/name" created, updated or deleted
    lost: set[str] = field(default_factory=set)  # GPU UUIDs lost
    stalled: set[str] = field(default_factory=set)  # nodes whose agent stalled
    assignment_changed: bool = False  # an assignment was applied, rolled back or deleted


def key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status(obj).get("conditions") or [] if c.get("type") == type_), None)


def replica_placements(server: dict[str, Any]) -> list[dict[str, Any]]:
    st = status(server)
    listed = st.get("replicaPlacements") or []
    if listed:
        return list(listed)
    return [{"replica": 0, **st["placement"]}] if st.get("placement") else []


def placements_by_replica(servers: Iterable[dict[str, Any]]) -> dict[tuple[str, int], tuple[str, tuple[str, ...]]]:
    """(server uid, replica) -> (node, GPU UUIDs): what flapping compares between checkpoints."""
    return {
        (s["metadata"]["uid"], int(p.get("replica", 0))): (p.get("node") or "", tuple(g["uuid"] for g in p["gpus"]))
        for s in servers
        for p in replica_placements(s)
    }


def check(snapshot: Snapshot, expect: Expectations) -> list[Violation]:
    return [
        *convergence(snapshot, expect),
        *memory(snapshot, expect),
        *children(snapshot),
        *unplaced_with_room(snapshot, expect),
        *rollouts_end(snapshot),
    ]


# --- every server converges ---


def convergence(snapshot: Snapshot, expect: Expectations) -> list[Violation]:
    found = []
    lost = {g.uuid for g in snapshot.gpus if not g.healthy and g.agent_live}
    for server in snapshot.servers:
        name, st = key(server), status(server)
        phase = st.get("phase")
        if st.get("observedGeneration") != server["metadata"].get("generation"):
            found.append(
                Violation(
                    "Converges",
                    name,
                    f"observedGeneration {st.get('observedGeneration')} "
                    f"!= generation {server['metadata'].get('generation')} (phase {phase})",
                )
            )
            continue
        if name in expect.invalid:
            if phase != "Failed":
                found.append(Violation("FailedOnlyForInvalidSpec", name, f"an invalid spec is {phase}, not Failed"))
            continue
        if phase == "Failed":
            estimated = condition(server, "Estimated") or {}
            found.append(Violation("FailedOnlyForInvalidSpec", name, f"Failed for a valid spec: {estimated}"))
        elif phase == "Pending":
            placed = condition(server, "Placed") or {}
            if placed.get("status") != "False" or not placed.get("reason") or not placed.get("message"):
                found.append(Violation("Converges", name, f"Pending without a reason: Placed={placed}"))
        elif phase == "Degraded":
            degraded = condition(server, "Degraded") or {}
            if not degraded.get("reason") or (degraded["reason"] in CORRECTABLE and not correction_spent(server)):
                found.append(Violation("Converges", name, f"Degraded: {degraded}"))
        elif phase == "Placed" and at_rest(server):
            pass
        elif phase != "Running":
            found.append(Violation("Converges", name, f"phase {phase} after settling: {brief_conditions(server)}"))
        for placement in replica_placements(server):
            on_lost = [g["uuid"] for g in placement["gpus"] if g["uuid"] in lost]
            if on_lost:
                found.append(
                    Violation("LeavesLostGpus", name, f"replica {placement.get('replica', 0)} on lost {on_lost}")
                )
    return found


def correction_spent(server: dict[str, Any]) -> bool:
    """A manual utilization is the user's to fix; an auto one stays Degraded only once the operator's
    corrections are used up."""
    annotations = server["metadata"].get("annotations") or {}
    manual = bool(server["spec"].get("gpuMemoryUtilization"))
    return manual or int(annotations.get(CORRECTIONS_ANNOTATION, "0") or 0) >= MAX_CORRECTIONS


def at_rest(server: dict[str, Any]) -> bool:
    """Placed, and no pod is missing that could run: scaled to zero, or the replicas that are not
    placed wait for room with a reason (Placed=True PartiallyPlaced) while the placed ones are ready."""
    if int(server["spec"].get("replicas", 1)) == 0:
        return True
    placed = condition(server, "Placed") or {}
    ready = (condition(server, "Ready") or {}).get("message", "")
    count = len(replica_placements(server))
    return placed.get("reason") == "PartiallyPlaced" and ready.startswith(f"{count}/")


def brief_conditions(server: dict[str, Any]) -> str:
    return "; ".join(
        f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message', '')[:120]}"
        for c in status(server).get("conditions") or []
    )


# --- no GPU promised more than it has ---


def memory(snapshot: Snapshot, expect: Expectations) -> list[Violation]:
    found = []
    truth = {g.uuid: g for g in snapshot.gpus}
    on_gpu = servers_on_gpus(snapshot.servers)
    reported_foreign = reported_foreign_mib(snapshot.gpu_nodes, snapshot.servers)
    reserved: dict[str, float] = defaultdict(float)
    for server in snapshot.servers:
        for placement in replica_placements(server):
            for gpu in placement["gpus"]:
                reserved[gpu["uuid"]] += float(placement.get("budgetMiB") or 0)
    held: dict[str, float] = defaultdict(float)
    for use in snapshot.engine_use:
        held[use.uuid] += use.mib
    for uuid in sorted(set(reserved) | set(held)):
        gpu = truth.get(uuid)
        if gpu is None:
            found.append(Violation("NoOverCommit", uuid, "placed on a GPU no node has"))
            continue
        if uuid not in expect.usable:
            found.append(
                Violation("NoOverCommit", uuid, f"placed on a GPU held whole by a foreign process: {on_gpu[uuid]}")
            )
            continue
        if not gpu.healthy or not gpu.agent_live:
            continue  # the GPU's servers are the convergence check's business
        if excused(uuid, snapshot, expect, on_gpu[uuid]):
            continue
        spiked = uuid in expect.spiked
        # A spike after the servers were placed may exceed what was free (the twin lets it; a real
        # process would get only the free memory): there the operator is judged on what the agent
        # reports, its room check without the margin (a restart still fits).
        if not spiked and held[uuid] > gpu.total_mib - gpu.foreign_mib + ROUNDING_MIB:
            found.append(
                Violation(
                    "NoOverCommit",
                    uuid,
                    f"engines hold {held[uuid]:.0f}MiB, {gpu.total_mib:.0f}MiB total - {gpu.foreign_mib:.0f}MiB "
                    f"foreign leaves {gpu.total_mib - gpu.foreign_mib:.0f}MiB; servers {on_gpu[uuid]}",
                )
            )
        foreign = reported_foreign.get(uuid, 0.0)
        margin = 0.0 if spiked else expect.margin_mib
        if reserved[uuid] + foreign + margin > gpu.total_mib + ROUNDING_MIB:
            found.append(
                Violation(
                    "NoOverCommit",
                    uuid,
                    f"reserved {reserved[uuid]:.0f}MiB + reported foreign {foreign:.0f}MiB + margin "
                    f"{margin:.0f}MiB > total {gpu.total_mib:.0f}MiB; servers {on_gpu[uuid]}",
                )
            )
    return found


def excused(uuid: str, snapshot: Snapshot, expect: Expectations, names: list[str]) -> bool:
    """Over the GPU's capacity is allowed when a Manual assignment put a server there (and warned),
    or when foreign use grew after the servers were placed and each of them says so."""
    servers = [s for s in snapshot.servers if key(s) in names]
    manual = {a["metadata"]["name"] for a in snapshot.assignments if a.get("spec", {}).get("strategy") == "Manual"}
    warned = any(
        OVER_COMMIT_WORDS in w and uuid_or_gpu_named(w, uuid)
        for a in snapshot.assignments
        if a["metadata"]["name"] in manual
        for w in status(a).get("warnings") or []
    ) or any(OVER_COMMIT_WORDS in w for s in servers for w in status(s).get("warnings") or [])
    by_manual = any((status(s).get("placement") or {}).get("assignment") in manual for s in servers)
    if by_manual and warned:
        return True
    if uuid in expect.spiked:
        return all((condition(s, "MemoryFits") or {}).get("reason") == FOREIGN_GREW for s in servers)
    return False


def uuid_or_gpu_named(warning: str, uuid: str) -> bool:
    return uuid in warning or "GPU" in warning or "gpu" in warning


def servers_on_gpus(servers: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for server in servers:
        for placement in replica_placements(server):
            for gpu in placement["gpus"]:
                found[gpu["uuid"]].append(key(server))
    return found


def reported_foreign_mib(gpu_nodes: Iterable[dict[str, Any]], servers: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per GPU, what the agents report held by processes of no server's pod, unattributed or reserved by
    the driver (what the operator counts as not its own)."""
    ours = {s["metadata"]["namespace"] for s in servers}
    foreign: dict[str, float] = {}
    for node in gpu_nodes:
        for gpu in status(node).get("gpus") or []:
            foreign[gpu["uuid"]] = (
                sum(
                    float(p.get("usedMiB", 0))
                    for p in gpu.get("processes") or []
                    if not p.get("podUID") or p.get("podNamespace") not in ours
                )
                + float(gpu.get("unattributedMiB") or 0)
                + float(gpu.get("memoryReservedMiB") or 0)
            )
    return foreign


# --- children: no duplicates, no orphans, and statuses that agree with them ---


def children(snapshot: Snapshot) -> list[Violation]:
    found = []
    by_uid = {s["metadata"]["uid"]: s for s in snapshot.servers}
    deployments_of: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for deployment in snapshot.deployments:
        owners = deployment["metadata"].get("ownerReferences") or []
        uids = [o["uid"] for o in owners if o.get("kind") == "InferenceServer"]
        if len(uids) != 1 or uids[0] not in by_uid:
            found.append(Violation("NoOrphans", key(deployment), f"Deployment owned by {uids}, no live server"))
            continue
        deployments_of[uids[0]][deployment["metadata"]["name"]] = deployment
    for uid, server in by_uid.items():
        found.extend(_server_children(server, deployments_of.get(uid, {})))
    found.extend(_pods(snapshot))
    return found


def _server_children(server: dict[str, Any], deployments: dict[str, dict[str, Any]]) -> list[Violation]:
    found = []
    name = server["metadata"]["name"]
    placements = {int(p.get("replica", 0)): p for p in replica_placements(server)}
    expected = {name if r == 0 else f"{name}-replica-{r}": r for r in placements}
    if set(deployments) != set(expected):
        found.append(
            Violation(
                "NoDuplicates",
                key(server),
                f"Deployments {sorted(deployments)}, placed replicas want {sorted(expected)}",
            )
        )
    replicas = int(server["spec"].get("replicas", 1))
    for deployment_name, replica in expected.items():
        deployment = deployments.get(deployment_name)
        if deployment is None:
            continue
        placement = placements[replica]
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        described = (
            annotations.get("vram.dev/node"),
            annotations.get("vram.dev/gpus"),
            annotations.get("vram.dev/budget-mib"),
        )
        wanted = (
            placement.get("node"),
            ",".join(g["uuid"] for g in placement["gpus"]),
            str(int(placement["budgetMiB"])),
        )
        if described != wanted:
            found.append(
                Violation("StatusAgrees", f"{key(server)}#{replica}", f"Deployment {described}, status {wanted}")
            )
        if deployment["spec"].get("replicas") != min(replicas, 1):
            found.append(
                Violation(
                    "StatusAgrees",
                    f"{key(server)}#{replica}",
                    f"Deployment replicas {deployment['spec'].get('replicas')}",
                )
            )
        ready = (deployment.get("status") or {}).get("readyReplicas") or 0
        if status(server).get("phase") == "Running" and replicas and ready < 1:
            found.append(
                Violation("StatusAgrees", f"{key(server)}#{replica}", "Running, but its Deployment has no ready pod")
            )
    return found


def _pods(snapshot: Snapshot) -> list[Violation]:
    """Every running pod sits where its Deployment's template says, one per Deployment."""
    found = []
    templates = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"]["template"]["metadata"].get("annotations") or {}
        for d in snapshot.deployments
    }
    per_deployment: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pod in snapshot.pods:
        if not running(pod):
            continue
        labels = pod["metadata"].get("labels") or {}
        server, replica = labels.get("vram.dev/server"), int(labels.get("vram.dev/replica", "0") or 0)
        deployment = (pod["metadata"]["namespace"], server if replica == 0 else f"{server}-replica-{replica}")
        annotations = templates.get(deployment)
        if annotations is None:
            found.append(Violation("NoOrphans", key(pod), f"running pod of no Deployment {deployment[1]}"))
            continue
        per_deployment[deployment].append(key(pod))
        where = (pod["spec"].get("nodeName"), ",".join(pod_gpus(pod)))
        if where != (annotations.get("vram.dev/node"), annotations.get("vram.dev/gpus")):
            found.append(
                Violation(
                    "StatusAgrees",
                    key(pod),
                    f"pod runs on {where}, its Deployment says "
                    f"{(annotations.get('vram.dev/node'), annotations.get('vram.dev/gpus'))}",
                )
            )
    for deployment, pods in per_deployment.items():
        if len(pods) > 1:
            found.append(Violation("NoDuplicates", "/".join(deployment), f"{len(pods)} running pods: {sorted(pods)}"))
    return found


# --- a server left unplaced is placed once capacity appears ---


def unplaced_with_room(snapshot: Snapshot, expect: Expectations) -> list[Violation]:
    """A generic single-GPU server (no pin, shared) missing replicas while a usable GPU has room for
    its budget. Only where the answer does not depend on the operator's sizing or a strategy."""
    if snapshot.assignments:
        return []  # an assignment decides for the servers it selects
    found = []
    reported_foreign = reported_foreign_mib(snapshot.gpu_nodes, snapshot.servers)
    reserved: dict[str, float] = defaultdict(float)
    dedicated: set[str] = set()
    for server in snapshot.servers:
        for placement in replica_placements(server):
            for gpu in placement["gpus"]:
                reserved[gpu["uuid"]] += float(placement.get("budgetMiB") or 0)
                if server["spec"].get("isolation") == "dedicated":
                    dedicated.add(gpu["uuid"])
    free = {
        g.uuid: g.total_mib - reported_foreign.get(g.uuid, g.foreign_mib) - reserved[g.uuid] - expect.margin_mib
        for g in snapshot.gpus
        if g.uuid in expect.usable and g.healthy and g.agent_live and g.uuid not in dedicated
    }
    for server in snapshot.servers:
        spec = server["spec"]
        if spec.get("engine") != "generic" or spec.get("placement") or spec.get("isolation") == "dedicated":
            continue
        missing = int(spec.get("replicas", 1)) - len(replica_placements(server))
        budget = parse_mib(str(spec.get("vramBudget")))
        room = [uuid for uuid, mib in free.items() if mib >= budget + ROUNDING_MIB]
        if missing > 0 and room:
            found.append(
                Violation(
                    "PlacedWhenRoom",
                    key(server),
                    f"{missing} replica(s) of {budget:.0f}MiB unplaced while {room[0]} has {free[room[0]]:.0f}MiB free",
                )
            )
    return found


def parse_mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / (1024 * 1024)


# --- an applied GpuAssignment finishes its rollout ---


def rollouts_end(snapshot: Snapshot) -> list[Violation]:
    """An assignment in Apply mode is no longer rolling out once the system has settled: done, or
    stopped with a reason that says what blocks it."""
    found = []
    for assignment in snapshot.assignments:
        if (assignment.get("spec") or {}).get("mode") != "Apply":
            continue
        applied = condition(assignment, "Applied") or {}
        pending = (status(assignment).get("rollout") or {}).get("pending") or []
        if applied.get("status") != "True" and applied.get("reason") in (None, "RollingOut"):
            found.append(
                Violation(
                    "RolloutEnds",
                    assignment["metadata"]["name"],
                    f"Applied={applied.get('status')} {applied.get('reason')}: {applied.get('message')}; "
                    f"pending {pending}",
                )
            )
    return found


# --- no server flaps between GPUs without a cause ---


def flaps(
    before: dict[tuple[str, int], tuple[str, tuple[str, ...]]],
    after: dict[tuple[str, int], tuple[str, tuple[str, ...]]],
    servers: Iterable[dict[str, Any]],
    causes: Causes,
) -> list[Violation]:
    if causes.assignment_changed:
        return []
    names = {s["metadata"]["uid"]: key(s) for s in servers}
    # A server one of whose replicas lost its GPU may renumber the others: replica 0 is always placed
    # (the planner gives its number to a placed sibling when it cannot be placed itself).
    hit = {uid for (uid, _), (_, gpus) in before.items() if set(gpus) & causes.lost}
    found = []
    for (uid, replica), (node, gpus) in sorted(after.items()):
        previous = before.get((uid, replica))
        if previous is None or previous == (node, gpus) or uid not in names:
            continue
        if names[uid] in causes.respecced or uid in hit:
            continue
        found.append(
            Violation("NoFlapping", f"{names[uid]}#{replica}", f"moved {previous} -> {(node, gpus)} without a cause")
        )
    return found
