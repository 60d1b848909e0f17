from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.agent.simulated import profile_snapshot
from vram_operator.agent.status import build_status
from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.controller.measure import measure_server
from vram_operator.controller.pods import pod_facts
from vram_operator.simulate.engines import Launch, Perturbation
from vram_operator.simulate.faults import parse_faults
from vram_operator.simulate.world import (
    LOST_GPU_MESSAGE,
    Backoff,
    PodView,
    World,
    parse_fake_gpus,
    pod_status,
    pod_view,
)

A5500 = 24564.0
UUID = "GPU-4b1f7c2e"
NODE = parse_fake_gpus(
    "workstation",
    f'[{{"index":0,"product":"NVIDIA-RTX-A5500","memoryMiB":24564,"uuid":"{UUID}"}},'
    '{"index":1,"product":"NVIDIA-RTX-A400","memoryMiB":4094,"uuid":"GPU-a400"}]',
)
EXACT = Perturbation(activation=0.0, weights=0.0)


def pod(name: str, utilization: float, *, created: str = "2026-01-01T00:00:00Z", gpus: str = UUID) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": f"uid-{name}",
            "name": name,
            "namespace": "ai",
            "labels": {"vram.dev/server": name},
            "creationTimestamp": created,
        },
        "spec": {
            "nodeName": "workstation",
            "containers": [
                {
                    "name": "server",
                    "image": "vllm/vllm-openai",
                    "args": ["Qwen/Qwen2.5-0.5B-Instruct", f"--gpu-memory-utilization={utilization}"],
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": gpus}],
                }
            ],
        },
        "status": {"phase": "Running"},
    }


def launch_of(raw: dict[str, Any]) -> Launch:
    view = pod_view(raw)
    spec = InferenceServerSpec.model_validate(
        {"engine": "vllm", "image": "x", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "maxModelLen": 4096}
    )
    return Launch("vllm", view.args, view.env, spec)


def step(world: World, raws: list[dict[str, Any]], faults: str = "", now: float = 0.0) -> list[Any]:
    views = [pod_view(r) for r in raws]
    launches = {v.uid: launch_of(r) for v, r in zip(views, raws, strict=True)}
    return world.step([NODE], views, launches, parse_faults(faults), now=now, stamp="2026-01-01T00:00:10Z")


def test_node_gpus_from_the_annotation() -> None:
    assert [(g.index, g.uuid, g.product, g.total_mib) for g in NODE.gpus] == [
        (0, UUID, "NVIDIA RTX A5500", A5500),
        (1, "GPU-a400", "NVIDIA RTX A400", 4094.0),
    ]


def test_a_second_engine_sees_what_the_first_took() -> None:
    world = World(perturbation=EXACT)
    first, second = pod("a", 0.6), pod("b", 0.5, created="2026-01-01T00:00:01Z")
    changed = step(world, [second, first])  # listed in any order: started by creation time
    assert [s.pod.name for s in changed] == ["b"]
    assert world.engines["uid-a"].run.running
    assert world.engines["uid-b"].phase == "CrashLoopBackOff"
    assert "Free memory on device cuda:0" in (world.engines["uid-b"].run.error or "")


def test_crash_loop_backs_off_then_starts_when_memory_is_free() -> None:
    world = World(perturbation=EXACT, backoff=Backoff(initial_s=10, max_s=40))
    blocker = "nodes: {workstation: {gpus: {0: {processes: [{pid: 9, name: blender, usedMiB: 20000}]}}}}"
    assert [s.crashes for s in step(world, [pod("a", 0.5)], blocker, now=0)] == [1]
    assert step(world, [pod("a", 0.5)], blocker, now=9.9) == []  # still backing off
    again = step(world, [pod("a", 0.5)], blocker, now=10)
    assert [(s.crashes, s.backoff_s) for s in again] == [(2, 20)]
    recovered = step(world, [pod("a", 0.5)], "", now=30)
    assert [(s.phase, s.crashes) for s in recovered] == [("Running", 2)]
    assert world.used_on(UUID) > 0.5 * A5500


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [Backoff(10, 300).delay(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_the_crash_status_is_what_the_operator_reads_as_a_crash() -> None:
    world = World(perturbation=EXACT)
    state = step(world, [pod("a", 0.03)])[0]
    patched = pod("a", 0.03) | pod_status(state, stamp="2026-01-01T00:00:10Z")
    facts = pod_facts(patched)
    assert facts.crashing and not facts.ready and facts.restarts == 1
    assert "No available memory for the cache blocks" in facts.termination_message
    container = patched["status"]["containerStatuses"][0]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"]["exitCode"] == 1


def test_engines_are_agent_processes_with_their_pod_uids() -> None:
    world = World(perturbation=EXACT)
    step(world, [pod("a", 0.5)])
    faults = parse_faults("nodes: {workstation: {gpus: {0: {processes: [{pid: 1873, name: Xorg, usedMiB: 356}]}}}}")
    snapshot = profile_snapshot(world.profile(NODE, faults), "workstation")
    status = build_status(snapshot, {}, {}, now="2026-01-01T00:00:10Z", agent_version="t")
    gpu = status.gpus[0]
    ours = [p for p in gpu.processes if p.pod_uid == "uid-a"]
    assert [(p.pod_namespace, p.pod_name, p.container) for p in ours] == [("ai", "a", "server")]
    assert {p.name for p in gpu.processes if p.pod_uid is None} == {"Xorg"}
    measured = measure_server({"uid-a"}, [UUID], [status])
    assert measured is not None
    assert measured.used_mib == pytest.approx(world.engines["uid-a"].run.used_mib[UUID], abs=0.01)


def test_a_pod_that_goes_takes_its_engine_along() -> None:
    world = World(perturbation=EXACT)
    step(world, [pod("a", 0.5)])
    assert step(world, []) == []
    assert world.engines == {} and world.used_on(UUID) == 0


def test_a_lost_gpu_crashes_its_engines_and_shows_unhealthy() -> None:
    world = World(perturbation=EXACT)
    step(world, [pod("a", 0.5)])
    lost = "nodes: {workstation: {gpus: {0: {lost: true}}}}"
    crashed = step(world, [pod("a", 0.5)], lost, now=1)
    assert [s.run.error for s in crashed] == [LOST_GPU_MESSAGE]
    snapshot = profile_snapshot(world.profile(NODE, parse_faults(lost)), "workstation")
    assert [g.healthy for g in snapshot.gpus] == [False, True]


def test_a_gone_node_has_no_engines() -> None:
    world = World(perturbation=EXACT)
    step(world, [pod("a", 0.5)])
    step(world, [pod("a", 0.5)], "nodes: {workstation: {gone: true}}")
    assert world.engines == {}


def test_state_file_per_gpu_and_per_pod() -> None:
    world = World(perturbation=EXACT)
    step(world, [pod("a", 0.5)])
    foreign = "{foreignMiB: 100, processes: [{pid: 9, name: x, usedMiB: 50}]}"
    faults = parse_faults(f"nodes: {{workstation: {{gpus: {{0: {foreign}}}}}}}")
    state = world.state([NODE], faults, seed=3, tick=7, stamp="t")
    gpu = state["gpus"][UUID]
    assert gpu["foreignMiB"] == 150
    assert [e["podUID"] for e in gpu["engines"]] == ["uid-a"]
    assert gpu["engines"][0]["reservedMiB"] == 0.5 * A5500
    assert gpu["usedMiB"] == pytest.approx(150 + gpu["engines"][0]["usedMiB"])
    assert state["pods"]["uid-a"]["state"] == "Running" and state["seed"] == 3


def test_same_seed_same_world() -> None:
    def run(seed: int) -> dict[str, Any]:
        world = World(perturbation=Perturbation(seed=seed, activation=0.3, weights=0.05))
        raws = [pod(f"s{i}", 0.02 + i * 0.01, gpus="GPU-a400", created=f"2026-01-01T00:00:0{i}Z") for i in range(8)]
        step(world, raws)
        return world.state([NODE], parse_faults(""), seed=seed, tick=1, stamp="t")

    assert run(5) == run(5)


def test_a_running_engine_outlives_its_server_until_the_pod_goes() -> None:
    world = World(perturbation=EXACT)
    raw = pod("a", 0.5)
    step(world, [raw])
    view = pod_view(raw)
    # The InferenceServer is gone (no launch): the engine keeps its memory while the pod runs.
    assert world.step([NODE], [view], {}, parse_faults(""), now=1, stamp="t") == []
    assert world.used_on(UUID) > 0
    # A new pod of an unknown server starts nothing.
    other = pod_view(pod("b", 0.2))
    world.step([NODE], [view, other], {}, parse_faults(""), now=2, stamp="t")
    assert set(world.engines) == {"uid-a"}


def generic_pod(name: str, budget_mib: int) -> tuple[PodView, Launch]:
    raw = pod(name, 0.1)
    raw["spec"]["containers"][0]["env"].append({"name": "VRAM_BUDGET_MIB", "value": str(budget_mib)})
    view = pod_view(raw)
    spec = InferenceServerSpec.model_validate({"engine": "generic", "image": "x", "vramBudget": f"{budget_mib}Mi"})
    return view, Launch("generic", view.args, view.env, spec)


@settings(max_examples=40, deadline=None)
@given(
    engines=st.lists(
        st.one_of(
            st.tuples(st.just("vllm"), st.integers(min_value=5, max_value=95)),
            st.tuples(st.just("generic"), st.integers(min_value=100, max_value=20_000)),
        ),
        min_size=1,
        max_size=8,
    ),
    foreign=st.integers(min_value=0, max_value=8_000),
)
def test_what_engines_reserve_on_a_gpu_never_exceeds_what_was_free(
    engines: list[tuple[str, int]], foreign: int
) -> None:
    """Every engine checks (vLLM) or allocates (the others) against what is free when it starts, so
    what the engines on a GPU reserve is at most its memory less the foreign memory. (vLLM's CUDA
    graphs come on top of its reservation, unchecked, as in vLLM 0.19.)"""
    world = World(perturbation=Perturbation(seed=1))
    faults = parse_faults(f"nodes: {{workstation: {{gpus: {{0: {{foreignMiB: {foreign}}}}}}}}}")
    views, launches = [], {}
    for position, (engine, size) in enumerate(engines):
        if engine == "vllm":
            raw = pod(f"v{position}", size / 100, created=f"2026-01-01T00:00:{position:02d}Z")
            view, launch = pod_view(raw), launch_of(raw)
        else:
            view, launch = generic_pod(f"g{position}", size)
        views.append(view)
        launches[view.uid] = launch
        world.step([NODE], views, launches, faults, now=float(position), stamp="t")
    running = [s.run for s in world.engines.values() if s.run.running]
    reserved = sum(run.reserved_mib.get(UUID, run.used_mib.get(UUID, 0.0)) for run in running)
    assert reserved <= A5500 - foreign
