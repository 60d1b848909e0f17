"""Runs a step list against the operator (a subprocess), the API server and a GpuTwin; settles at each
check step and checks the invariants from outside.

One run = fresh namespaces and a fresh operator watching them, so runs (and the replays of shrinking)
never see each other's servers; the twin plays the GPUs for those namespaces only.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import Operator

from localcluster.resources import wait_service_account
from model_based.generate import MAX_CONTEXT, NAMESPACES, GpuSlot
from model_based.invariants import (
    Causes,
    Expectations,
    Snapshot,
    Violation,
    brief_conditions,
    check,
    flaps,
    key,
    placements_by_replica,
    replica_placements,
)
from model_based.steps import (
    AGENT_RESUME,
    AGENT_STALL,
    APPLY,
    CHECK,
    CREATE,
    DELETE,
    FOREIGN_CLEAR,
    FOREIGN_SPIKE,
    GPU_LOSE,
    GPU_RECOVER,
    OPERATOR_RESTART,
    PREVIEW,
    ROLLBACK,
    UNASSIGN,
    UPDATE,
    Step,
)
from model_based.twin import GpuTwin

# How long a re-created GpuAssignment waits for its deleted namesake's finalizer.
ASSIGNMENT_GONE_SECONDS = 90.0

GROUP, VERSION = "vram.dev", "v1alpha1"
RUN_LABEL, GROUP_LABEL = "mbt.vram.dev/run", "mbt.vram.dev/group"
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Timing:
    settle_seconds: float = 90.0  # the longest a check waits for the invariants to hold
    quiet_seconds: float = 4.0  # placements unchanged this long (and invariants holding): settled
    heartbeat_stale_seconds: float = 6.0
    gpu_node_grace_seconds: float = 10.0


@dataclass
class RunResult:
    run: str
    operations: int = 0
    checks: int = 0
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0
    failed_at: int | None = None  # index of the check step that found violations
    # What the checks saw (phases, reasons, crash-looping pods): that the run exercised what it should.
    observed: Counter[str] = field(default_factory=Counter)
    final: list[str] = field(default_factory=list)  # each server as the last check saw it
    logs: Path | None = None  # the operator's logs of the run


class Driver:
    def __init__(
        self,
        api: client.ApiClient,
        kubeconfig: Path,
        twin: GpuTwin,
        usable: list[GpuSlot],
        log_dir: Path,
        *,
        margin_mib: float,
        timing: Timing | None = None,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.kubeconfig = kubeconfig
        self.twin = twin
        self.usable = usable
        self.log_dir = log_dir
        self.margin_mib = margin_mib
        self.timing = timing or Timing()

    def run(self, run: str, steps: list[Step], seed: int = 0) -> RunResult:
        """Run the steps (and a final check if the list does not end with one); stops at the first
        check that finds a violation."""
        if not steps or steps[-1].op != CHECK:
            steps = [*steps, Step(CHECK)]
        started = time.monotonic()
        result = RunResult(run, logs=self.log_dir / run)
        state = _RunState(run, [f"{run}-{suffix}" for suffix in NAMESPACES])
        operator = self._setup(state, seed)
        try:
            for index, step in enumerate(steps):
                if step.op == CHECK:
                    result.checks += 1
                    result.violations = self._settle_and_check(state, operator)
                    last = self.snapshot(state)
                    result.observed.update(observe(last))
                    result.final = [describe_server(server) for server in last.servers]
                    if result.violations:
                        result.failed_at = index
                        break
                    continue
                result.operations += 1
                self._do(state, operator, step)
                time.sleep(step.pause)
        finally:
            self._teardown(state, operator)
            result.seconds = time.monotonic() - started
        return result

    # --- set-up and tear-down ---

    def _setup(self, state: _RunState, seed: int) -> Operator:
        for namespace in state.namespaces:
            body: Any = {"metadata": {"name": namespace, "labels": {RUN_LABEL: state.run}}}
            self.core.create_namespace(body=body)
        for namespace in state.namespaces:
            wait_service_account(self.api, namespace, 60.0)
        self.twin.start(state.namespaces, seed)
        log_dir = self.log_dir / state.run
        log_dir.mkdir(parents=True, exist_ok=True)
        extra = [f"--namespace={ns}" for ns in state.namespaces[1:]]
        extra += [
            f"--heartbeat-stale-seconds={self.timing.heartbeat_stale_seconds}",
            f"--gpu-node-grace-seconds={self.timing.gpu_node_grace_seconds}",
        ]
        operator = Operator(self.kubeconfig, state.namespaces[0], log_dir, *extra)
        operator.start()
        return operator

    def _teardown(self, state: _RunState, operator: Operator) -> None:
        operator.stop()
        for name in list(state.assignments):
            self._delete_assignment(state, name)
        for namespace in state.namespaces:
            try:
                self.core.delete_namespace(namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
        self.twin.stop()

    # --- steps ---

    def _do(self, state: _RunState, operator: Operator, step: Step) -> None:
        args = step.args
        if step.op == CREATE:
            self._create(state, args)
        elif step.op == UPDATE:
            self._update(state, args)
        elif step.op == DELETE:
            self._delete(state, args)
        elif step.op == PREVIEW:
            self._preview(state, args)
        elif step.op in (APPLY, ROLLBACK):
            self._apply(state, args, step.op)
        elif step.op == UNASSIGN:
            self._delete_assignment(state, args["name"])
        elif step.op == GPU_LOSE:
            self.twin.lose_gpu(args["uuid"])
            state.causes.lost.add(args["uuid"])
        elif step.op == GPU_RECOVER:
            self.twin.recover_gpu(args["uuid"])
        elif step.op == FOREIGN_SPIKE:
            self.twin.set_foreign(args["uuid"], float(args["mib"]))
            state.spiked.add(args["uuid"])
        elif step.op == FOREIGN_CLEAR:
            self.twin.set_foreign(args["uuid"], 0.0)
            state.spiked.discard(args["uuid"])
        elif step.op == AGENT_STALL:
            self.twin.stall_agent(args["node"])
            state.causes.stalled.add(args["node"])
        elif step.op == AGENT_RESUME:
            self.twin.resume_agent(args["node"])
        elif step.op == OPERATOR_RESTART:
            operator.kill()
            operator.start()
        else:
            raise ValueError(f"unknown step {step.op}")

    def _create(self, state: _RunState, args: dict[str, Any]) -> None:
        namespace, name = state.namespace(args["namespace"]), args["name"]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceServer",
            "metadata": {"name": name, "labels": {RUN_LABEL: state.run, GROUP_LABEL: args["group"]}},
            "spec": args["spec"],
        }
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", body)
        except ApiException as error:
            if error.status != 409:  # a name taken: refused, as a user's create would be
                raise
            return
        state.specs[f"{namespace}/{name}"] = dict(args["spec"])
        state.causes.respecced.add(f"{namespace}/{name}")

    def _update(self, state: _RunState, args: dict[str, Any]) -> None:
        namespace, name = state.namespace(args["namespace"]), args["name"]
        full = f"{namespace}/{name}"
        if full not in state.specs:
            return  # removed while shrinking: nothing to update
        merged = {k: v for k, v in {**state.specs[full], **args["patch"]}.items() if v is not None}
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferenceservers", name, {"spec": args["patch"]}
            )
        except ApiException as error:
            if error.status not in (404, 422):  # 422: the merged spec is refused at admission, as it would be
                raise
            return
        state.specs[full] = merged
        state.causes.respecced.add(full)

    def _delete(self, state: _RunState, args: dict[str, Any]) -> None:
        namespace, name = state.namespace(args["namespace"]), args["name"]
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", name)
        except ApiException as error:
            if error.status != 404:
                raise
        state.specs.pop(f"{namespace}/{name}", None)
        state.causes.respecced.add(f"{namespace}/{name}")

    def _preview(self, state: _RunState, args: dict[str, Any]) -> None:
        name = f"{state.run}-{args['name']}"
        labels = {RUN_LABEL: state.run} | ({GROUP_LABEL: args["group"]} if args.get("group") else {})
        spec: dict[str, Any] = {
            "strategy": args["strategy"],
            "mode": "Preview",
            "serverSelector": {"matchLabels": labels},
            "assignments": [
                {"server": state.server_key(p["server"]), "node": p["node"], "gpus": p["gpus"]}
                for p in args.get("pins") or []
            ],
        }
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuAssignment", "metadata": {"name": name}, "spec": spec}
        if name in state.assignments:
            # A new preview of an existing assignment: its spec replaced, back in Preview mode.
            patch = {"spec": {**spec, "rollbackToRevision": None}}
            self.custom.patch_cluster_custom_object(GROUP, VERSION, "gpuassignments", name, patch)
        else:
            self._create_assignment(name, body)
            state.assignments.add(name)

    def _create_assignment(self, name: str, body: dict[str, Any]) -> None:
        """Create it; one of the same name still being deleted (the operator's finalizer gives its
        servers back first) is waited out."""
        deadline = time.monotonic() + ASSIGNMENT_GONE_SECONDS
        while True:
            try:
                self.custom.create_cluster_custom_object(GROUP, VERSION, "gpuassignments", body)
                return
            except ApiException as error:
                if error.status != 409 or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def _apply(self, state: _RunState, args: dict[str, Any], op: str) -> None:
        name = f"{state.run}-{args['name']}"
        if name not in state.assignments:
            return
        patch: dict[str, Any] = {"spec": {"mode": "Apply"}}
        if op == ROLLBACK:
            patch["spec"]["rollbackToRevision"] = int(args["revision"])
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "gpuassignments", name, patch)
        state.causes.assignment_changed = True

    def _delete_assignment(self, state: _RunState, short_or_full: str) -> None:
        name = short_or_full if short_or_full.startswith(f"{state.run}-") else f"{state.run}-{short_or_full}"
        if name not in state.assignments:
            return
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "gpuassignments", name)
        except ApiException as error:
            if error.status != 404:
                raise
        state.assignments.discard(name)
        state.causes.assignment_changed = True

    # --- settle and check ---

    def snapshot(self, state: _RunState) -> Snapshot:
        sanitize = self.api.sanitize_for_serialization  # type: ignore[attr-defined]
        servers, deployments, pods = [], [], []
        for namespace in state.namespaces:
            servers += self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers")["items"]
            deployments += sanitize(self.apps.list_namespaced_deployment(namespace).items)
            pods += sanitize(self.core.list_namespaced_pod(namespace).items)
        gpu_nodes = self.custom.list_cluster_custom_object(GROUP, VERSION, "gpunodes")["items"]
        assignments = [
            a
            for a in self.custom.list_cluster_custom_object(GROUP, VERSION, "gpuassignments")["items"]
            if a["metadata"]["name"] in state.assignments
        ]
        return Snapshot(servers, deployments, pods, gpu_nodes, assignments, self.twin.gpus(), self.twin.engine_use())

    def _expectations(self, state: _RunState) -> Expectations:
        invalid = frozenset(k for k, spec in state.specs.items() if spec.get("maxModelLen") == MAX_CONTEXT)
        return Expectations(
            usable=frozenset(s.uuid for s in self.usable),
            invalid=invalid,
            margin_mib=self.margin_mib,
            spiked=frozenset(state.spiked),
        )

    def _settle_and_check(self, state: _RunState, operator: Operator) -> list[Violation]:
        """Poll until the invariants hold and the placements stay put for `quiet_seconds`; the
        violations of the last look when `settle_seconds` pass first."""
        deadline = time.monotonic() + self.timing.settle_seconds
        expect = self._expectations(state)
        quiet_since: float | None = None
        fingerprint: object = None
        violations: list[Violation] = []
        moves: list[Violation] = []
        while True:
            if not operator.alive():
                return [Violation("OperatorAlive", "operator", f"exited: {operator.logs()[-1500:]}")]
            snap = self.snapshot(state)
            placements = placements_by_replica(snap.servers)
            violations = check(snap, expect)
            now = time.monotonic()
            if placements != fingerprint:
                if quiet_since is not None and not violations:
                    # Settled once, then moved with nothing done in between: a flap.
                    moves = flaps(fingerprint, placements, snap.servers, state.causes)  # type: ignore[arg-type]
                    if moves:
                        return moves
                fingerprint, quiet_since = placements, None
            if violations:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= self.timing.quiet_seconds:
                break
            if now > deadline:
                return violations or [Violation("Settles", state.run, "placements kept changing")]
            time.sleep(POLL_SECONDS)
        moved = flaps(state.placements, placements, snap.servers, state.causes)
        state.placements, state.causes = placements, Causes()
        return moved


def describe_server(server: dict[str, Any]) -> str:
    st = server.get("status") or {}
    placements = [(p["node"], [g["uuid"][:12] for g in p["gpus"]], p["budgetMiB"]) for p in replica_placements(server)]
    utilization = st.get("gpuMemoryUtilization")
    return f"{key(server)} {st.get('phase')} {placements} util={utilization}: {brief_conditions(server)}"


def observe(snapshot: Snapshot) -> Counter[str]:
    """Phases and the reasons behind them, and pods whose engine crash-loops."""
    seen: Counter[str] = Counter()
    for server in snapshot.servers:
        st = server.get("status") or {}
        seen[f"phase:{st.get('phase')}"] += 1
        for c in st.get("conditions") or []:
            failing = "True" if c.get("type") == "Degraded" else "False"
            if c.get("type") in ("Placed", "Degraded", "MemoryFits") and c.get("status") == failing:
                seen[f"{c['type']}:{c.get('reason')}"] += 1
    for pod in snapshot.pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                seen["pod:CrashLoopBackOff"] += 1
    return seen


@dataclass
class _RunState:
    run: str
    namespaces: list[str]
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/name" -> spec the driver gave it
    assignments: set[str] = field(default_factory=set)
    spiked: set[str] = field(default_factory=set)
    causes: Causes = field(default_factory=Causes)
    placements: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def namespace(self, suffix: str) -> str:
        return f"{self.run}-{suffix}"

    def server_key(self, short: str) -> str:
        namespace, name = short.split("/")
        return f"{self.namespace(namespace)}/{name}"
