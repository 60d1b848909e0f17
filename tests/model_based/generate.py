"""Seeded random step sequences: user actions on servers and GpuAssignments, faults, operator restarts.

The generator keeps a small model of what exists (servers, assignments, lost GPUs, spikes, stalled
agents) so that most steps are meaningful (an update names a server that exists, a recovery a GPU
that was lost). Same seed, same fleet, same length: the same steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

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

NAMESPACES = ("a", "b")  # suffixes; the driver prefixes them with the run's name
SERVER_NAMES = tuple(f"s{i}" for i in range(10))
ASSIGNMENT_NAMES = ("ga0", "ga1")
GENERIC_BUDGETS = ("512Mi", "1Gi", "3Gi", "6Gi", "12Gi", "20Gi", "36Gi", "60Gi")
VLLM_MODELS = ("Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B")
# Manual utilizations, from too low for any model's weights plus KV cache to nearly the whole GPU.
MANUAL_UTILIZATIONS = (0.06, 0.1, 0.3, 0.5, 0.85)
GGUF_WEIGHTS_MIB = (1800, 4500, 9000)
MAX_CONTEXT = 200_000  # beyond every catalogued model's context: vLLM refuses it, a spec error

WEIGHTS: dict[str, int] = {
    CREATE: 24,
    UPDATE: 14,
    DELETE: 9,
    PREVIEW: 4,
    APPLY: 3,
    ROLLBACK: 2,
    UNASSIGN: 2,
    GPU_LOSE: 4,
    GPU_RECOVER: 5,
    FOREIGN_SPIKE: 4,
    FOREIGN_CLEAR: 5,
    AGENT_STALL: 2,
    AGENT_RESUME: 3,
    OPERATOR_RESTART: 3,
}


@dataclass(frozen=True)
class GpuSlot:
    """A GPU the run may use."""

    node: str
    index: int
    uuid: str
    total_mib: int


@dataclass
class _Model:
    """What the generated steps have made exist so far."""

    servers: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/name" -> spec
    assignments: dict[str, int] = field(default_factory=dict)  # name -> revisions applied
    lost: set[str] = field(default_factory=set)
    spiked: set[str] = field(default_factory=set)
    stalled: set[str] = field(default_factory=set)


class Generator:
    def __init__(self, seed: int, gpus: list[GpuSlot], weights: dict[str, int] | None = None) -> None:
        self.rng = random.Random(seed)
        self.gpus = gpus
        self.weights = dict(weights or WEIGHTS)
        self.model = _Model()

    def steps(self, operations: int, check_every: int) -> list[Step]:
        """`operations` steps with a check after every `check_every` of them, and one at the end."""
        steps: list[Step] = []
        for count in range(1, operations + 1):
            steps.append(self._operation())
            if count % check_every == 0 or count == operations:
                steps.append(Step(CHECK))
        return steps

    def _operation(self) -> Step:
        ops = [op for op in self.weights if self.weights[op] > 0 and self._possible(op)]
        op = self.rng.choices(ops, weights=[self.weights[o] for o in ops])[0]
        step = getattr(self, f"_{op}")()
        pause = round(self.rng.choice((0.0, 0.0, 0.2, 0.5, 1.0)), 1)
        return Step(step.op, step.args, pause)

    def _possible(self, op: str) -> bool:
        m = self.model
        return {
            UPDATE: bool(m.servers),
            DELETE: bool(m.servers),
            PREVIEW: bool(m.servers),
            APPLY: bool(m.assignments),
            ROLLBACK: any(m.assignments.values()),
            UNASSIGN: bool(m.assignments),
            GPU_LOSE: len(m.lost) < len(self.gpus) - 1,
            GPU_RECOVER: bool(m.lost),
            FOREIGN_SPIKE: len(m.spiked) < len(self.gpus),
            FOREIGN_CLEAR: bool(m.spiked),
            AGENT_STALL: len(m.stalled) < len({g.node for g in self.gpus}),
            AGENT_RESUME: bool(m.stalled),
        }.get(op, True)

    # --- servers ---

    def _create(self) -> Step:
        namespace = self.rng.choice(NAMESPACES)
        name = self.rng.choice(SERVER_NAMES)
        key = f"{namespace}/{name}"
        spec = self.spec()
        # A name already taken: the API server refuses the create (409), as it would a user's.
        self.model.servers.setdefault(key, spec)
        group = self.rng.choice(("x", "y"))
        return Step(CREATE, {"namespace": namespace, "name": name, "spec": spec, "group": group})

    def spec(self) -> dict[str, Any]:
        engine = self.rng.choices(("generic", "vllm", "llamacpp"), weights=(5, 4, 2))[0]
        spec: dict[str, Any] = {"engine": engine, "replicas": self.rng.choices((1, 2, 3, 0), weights=(14, 3, 2, 1))[0]}
        tensor_parallel = 1
        if engine == "generic":
            spec |= generic_spec(self.rng.choice(GENERIC_BUDGETS), spec["replicas"])
        elif engine == "vllm":
            model = self.rng.choice(VLLM_MODELS)
            spec |= {"image": "vllm/vllm-openai:v0.19.0", "model": {"name": model}}
            spec["maxModelLen"] = self.rng.choice((2048, 4096, 8192))
            if self.rng.random() < 0.05:
                spec["maxModelLen"] = MAX_CONTEXT  # invalid whatever the fleet: Failed is right
            if self.rng.random() < 0.4:
                spec["gpuMemoryUtilization"] = self.rng.choice(MANUAL_UTILIZATIONS)
            if model.endswith("8B") and self.rng.random() < 0.3:
                tensor_parallel = 2
                spec["tensorParallelSize"] = 2
        else:
            weights = self.rng.choice(GGUF_WEIGHTS_MIB)
            spec |= {
                "image": "ghcr.io/ggml-org/llama.cpp:server-cuda",
                "model": {"name": f"my-org/model-{weights}-Q4_K_M.gguf", "weightsMiB": weights},
                "maxModelLen": self.rng.choice((2048, 4096)),
                "maxNumSeqs": self.rng.choice((1, 2, 4)),
            }
        if self.rng.random() < 0.1:
            spec["isolation"] = "dedicated"
        if self.rng.random() < 0.15:
            spec["latencyCritical"] = True
        if self.rng.random() < 0.1:
            spec["placement"] = self._pin(tensor_parallel)
        return spec

    def _pin(self, count: int) -> dict[str, Any]:
        node = self.rng.choice(sorted({g.node for g in self.gpus}))
        indices = sorted(g.index for g in self.gpus if g.node == node)
        if len(indices) < count:
            node = max({g.node for g in self.gpus}, key=lambda n: sum(1 for g in self.gpus if g.node == n))
            indices = sorted(g.index for g in self.gpus if g.node == node)
        return {"node": node, "gpus": sorted(self.rng.sample(indices, min(count, len(indices))))}

    def _update(self) -> Step:
        key = self.rng.choice(sorted(self.model.servers))
        spec = self.model.servers[key]
        namespace, name = key.split("/")
        patch: dict[str, Any] = {}
        choice = self.rng.choice(("replicas", "size", "utilization", "isolation", "pin", "respec"))
        if choice == "replicas":
            patch["replicas"] = self.rng.choice((0, 1, 2, 3))
        elif choice == "size" and spec["engine"] == "generic":
            patch["vramBudget"] = self.rng.choice(GENERIC_BUDGETS)
        elif choice == "utilization" and spec["engine"] == "vllm":
            patch["gpuMemoryUtilization"] = self.rng.choice((None, *MANUAL_UTILIZATIONS))
        elif choice == "isolation":
            patch["isolation"] = self.rng.choice(("shared", "dedicated"))
        elif choice == "pin":
            tensor_parallel = int(spec.get("tensorParallelSize", 1))
            patch["placement"] = None if "placement" in spec else self._pin(tensor_parallel)
        else:  # a new spec altogether (the engine may change)
            new = self.spec()
            patch = {k: new.get(k) for k in {*spec, *new}}
        if not patch:
            patch["replicas"] = self.rng.choice((1, 2))
        merged = {**spec, **patch}
        self.model.servers[key] = {k: v for k, v in merged.items() if v is not None}
        return Step(UPDATE, {"namespace": namespace, "name": name, "patch": patch})

    def _delete(self) -> Step:
        key = self.rng.choice(sorted(self.model.servers))
        del self.model.servers[key]
        namespace, name = key.split("/")
        return Step(DELETE, {"namespace": namespace, "name": name})

    # --- GpuAssignments ---

    def _assignPreview(self) -> Step:  # noqa: N802 (named after the operation)
        name = self.rng.choice(ASSIGNMENT_NAMES)
        strategy = self.rng.choice(("Manual", "VRAMBased", "Balanced", "IsolationFirst"))
        pins = []
        if strategy == "Manual":
            for key in self.rng.sample(sorted(self.model.servers), min(2, len(self.model.servers))):
                tensor_parallel = int(self.model.servers[key].get("tensorParallelSize", 1))
                pin = self._pin(tensor_parallel)
                if len(pin["gpus"]) == tensor_parallel:
                    pins.append({"server": key, **pin})
        self.model.assignments.setdefault(name, 0)
        group = self.rng.choice(("x", "y", None))
        return Step(PREVIEW, {"name": name, "strategy": strategy, "pins": pins, "group": group})

    def _assignApply(self) -> Step:  # noqa: N802
        name = self.rng.choice(sorted(self.model.assignments))
        self.model.assignments[name] += 1
        return Step(APPLY, {"name": name})

    def _assignRollback(self) -> Step:  # noqa: N802
        name = self.rng.choice(sorted(n for n, revisions in self.model.assignments.items() if revisions))
        revision = self.rng.randint(1, self.model.assignments[name])
        self.model.assignments[name] += 1
        return Step(ROLLBACK, {"name": name, "revision": revision})

    def _assignDelete(self) -> Step:  # noqa: N802
        name = self.rng.choice(sorted(self.model.assignments))
        del self.model.assignments[name]
        return Step(UNASSIGN, {"name": name})

    # --- faults ---

    def _gpuLose(self) -> Step:  # noqa: N802
        uuid = self.rng.choice(sorted(g.uuid for g in self.gpus if g.uuid not in self.model.lost))
        self.model.lost.add(uuid)
        return Step(GPU_LOSE, {"uuid": uuid})

    def _gpuRecover(self) -> Step:  # noqa: N802
        uuid = self.rng.choice(sorted(self.model.lost))
        self.model.lost.discard(uuid)
        return Step(GPU_RECOVER, {"uuid": uuid})

    def _foreignSpike(self) -> Step:  # noqa: N802
        gpu = self.rng.choice(sorted((g for g in self.gpus if g.uuid not in self.model.spiked), key=lambda g: g.uuid))
        self.model.spiked.add(gpu.uuid)
        fraction = self.rng.choice((0.05, 0.2, 0.5, 0.9))
        return Step(FOREIGN_SPIKE, {"uuid": gpu.uuid, "mib": int(gpu.total_mib * fraction)})

    def _foreignClear(self) -> Step:  # noqa: N802
        uuid = self.rng.choice(sorted(self.model.spiked))
        self.model.spiked.discard(uuid)
        return Step(FOREIGN_CLEAR, {"uuid": uuid})

    def _agentStall(self) -> Step:  # noqa: N802
        node = self.rng.choice(sorted({g.node for g in self.gpus} - self.model.stalled))
        self.model.stalled.add(node)
        return Step(AGENT_STALL, {"node": node})

    def _agentResume(self) -> Step:  # noqa: N802
        node = self.rng.choice(sorted(self.model.stalled))
        self.model.stalled.discard(node)
        return Step(AGENT_RESUME, {"node": node})

    def _operatorRestart(self) -> Step:  # noqa: N802
        return Step(OPERATOR_RESTART)


def generic_spec(budget: str, replicas: int = 1) -> dict[str, Any]:
    return {"engine": "generic", "image": "example.invalid/service:1", "vramBudget": budget, "replicas": replicas}


def generate(
    seed: int, gpus: list[GpuSlot], operations: int, check_every: int = 20, weights: dict[str, int] | None = None
) -> list[Step]:
    return Generator(seed, gpus, weights).steps(operations, check_every)
