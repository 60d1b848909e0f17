from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from controller_builders import generic, gpu_node

from vram_operator.api.base import ObjectMeta
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    ModelSpec,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller import annotations as notes
from vram_operator.controller.book import ReservationBook
from vram_operator.controller.decision import Inputs, decide, no_gpus
from vram_operator.controller.server_reconciler import decision_event, for_render, pins_for, with_overrides

MARGIN = 256.0


def test_generic_server_is_placed_and_reports_no_gpus_when_there_are_none() -> None:
    server = generic("yolo", "650Mi")
    placed = decide([server], Inputs(nodes=[gpu_node("ws", 1)], reserved=[]))
    outcome = placed.outcomes["ns/yolo"]
    assert outcome.placement is not None and outcome.placement.node == "ws"
    empty = Inputs(nodes=[], reserved=[])
    assert no_gpus(empty)
    unplaced = decide([server], empty).outcomes["ns/yolo"]
    assert unplaced.placement is None and unplaced.unplaced_reason == "NoGpus"
    sick = Inputs(nodes=[gpu_node("ws", 1, healthy=False)], reserved=[])
    assert decide([server], sick).outcomes["ns/yolo"].unplaced_reason == "NoGpus"


def placement(uuid: str) -> PlacementStatus:
    return PlacementStatus(node="ws", gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=1000)


def test_pins_keep_a_placed_server_where_it_is_unless_replaced_or_assigned() -> None:
    server = generic("a", "1000Mi")
    status = InferenceServerStatus(placement=placement("G0"))
    [pin] = pins_for(server, status, replace=False)
    assert (pin.node, pin.gpus, pin.budget_override_mib) == ("ws", ("G0",), None)
    assert pins_for(server, status, replace=True) == []
    assert pins_for(server, None, replace=False) == []
    assigned = notes.AssignedPlacement("fleet", 2, "h100-0", ("G9",), 5000.0, generation=1)
    moved = generic("a", "1000Mi", annotations={notes.ASSIGNED: assigned.encode()})
    [pin] = pins_for(moved, status, replace=True)
    assert (pin.node, pin.gpus, pin.budget_override_mib) == ("h100-0", ("G9",), 5000.0)


def test_overrides_and_stop_for_render() -> None:
    vllm = InferenceServer(
        metadata=ObjectMeta(name="llm", namespace="ns", annotations={notes.UTILIZATION: "0.55"}),
        spec=InferenceServerSpec(engine="vllm", image="v", model=ModelSpec(name="Qwen/Qwen2.5-7B-Instruct")),
    )
    assert with_overrides(vllm).spec.gpu_memory_utilization == 0.55
    stopped = generic("s", "1Gi", annotations={notes.STOPPED: "true"})
    assert for_render(stopped).spec.replicas == 0
    assert for_render(generic("s", "1Gi")).spec.replicas == 1


def test_decision_events() -> None:
    from vram_operator.controller.server_status import Outcome

    failed = Outcome(estimate_error="bad", estimate_error_reason="EstimateFailed")
    assert decision_event(None, failed)[:2] == ("Warning", "EstimateFailed")
    assert decision_event(None, Outcome(estimate_error="bad", estimate_error_reason="ConfigMapInvalid"))[1] == (
        "ConfigMapInvalid"
    )
    assert decision_event(None, Outcome(unplaced_reason="InsufficientMemory"))[1] == "InsufficientMemory"
    assert decision_event(None, Outcome(placement=placement("G0")))[1] == "Placed"
    assert decision_event(placement("G1"), Outcome(placement=placement("G0")))[1] == "Rebalanced"


def test_concurrent_decisions_never_overcommit_a_gpu() -> None:
    """200 creates racing through the single writer; statuses land late and in random order."""
    nodes = [gpu_node(f"n{i}", 2) for i in range(4)]  # 8 GPUs of 24564 MiB
    book = ReservationBook()
    index: dict[str, InferenceServer] = {}
    rng = random.Random(7)

    async def create(i: int) -> None:
        server = generic(f"s{i}", f"{rng.choice([650, 1500, 3000, 7000])}Mi")
        index[server.key] = server
        async with book.lock:
            inputs = Inputs(
                nodes=nodes, reserved=book.standing(list(index.values()), exclude=server.key), margin_mib=MARGIN
            )
            outcome = decide([server], inputs).outcomes[server.key]
            book.hold(server.key, outcome.placement)
        await asyncio.sleep(rng.random() / 100)  # the status patch is in flight
        index[server.key] = server.model_copy(update={"status": InferenceServerStatus(placement=outcome.placement)})

    async def main() -> None:
        await asyncio.gather(*(create(i) for i in range(200)))

    asyncio.run(main())
    reserved: dict[str, float] = defaultdict(float)
    for server in index.values():
        placed = server.status.placement if server.status else None
        for gpu in placed.gpus if placed else []:
            reserved[gpu.uuid] += placed.budget_mib if placed else 0.0
    assert reserved, "something was placed"
    assert all(total + MARGIN <= 24564 + 1e-6 for total in reserved.values()), reserved
    assert sum(1 for s in index.values() if s.status and s.status.placement) < 200  # the fleet filled up


def test_batched_decisions_share_planner_runs_and_never_overcommit() -> None:
    from vram_operator.controller.batching import DecisionBatcher

    nodes = [gpu_node("n0", 2)]
    book = ReservationBook()
    index: dict[str, InferenceServer] = {}
    batcher = DecisionBatcher(book)

    def inputs_for(deciding: frozenset[str]) -> Inputs:
        return Inputs(nodes=nodes, reserved=book.standing(list(index.values()), exclude=deciding), margin_mib=MARGIN)

    async def create(i: int) -> None:
        server = generic(f"s{i}", "3000Mi")
        index[server.key] = server
        outcome, _ = await batcher.decide(server, [], {}, inputs_for)
        await asyncio.sleep(0.001)
        index[server.key] = server.model_copy(update={"status": InferenceServerStatus(placement=outcome.placement)})

    async def main() -> None:
        await asyncio.gather(*(create(i) for i in range(40)))

    asyncio.run(main())
    placed = [s for s in index.values() if s.status and s.status.placement]
    # 2 GPUs x floor((24564 - 256) / 3000) = 16 fit; the other 24 wait.
    assert len(placed) == 16
    assert batcher.runs < 40


def test_each_batch_reads_its_inputs_through_its_newest_request() -> None:
    # A flood keeps one batch runner going; each batch must read the fleet as its newest request sees
    # it (the clock that judges heartbeats, the nodes), not as the request that started the runner did.
    from vram_operator.controller.batching import DecisionBatcher

    book = ReservationBook()
    batcher = DecisionBatcher(book)
    fleet_then = Inputs(nodes=[gpu_node("n0", 1)], reserved=[], margin_mib=MARGIN)
    fleet_now = Inputs(nodes=[gpu_node("n0", 1)], reserved=[], stale_nodes=frozenset({"n0"}), margin_mib=MARGIN)

    async def main() -> tuple[str | None, str | None]:
        async with book.lock:  # the first batch waits for the book while the second request queues
            first = asyncio.create_task(batcher.decide(generic("a", "1Gi"), [], {}, lambda _: fleet_then))
            await asyncio.sleep(0.01)
            second = asyncio.create_task(batcher.decide(generic("b", "1Gi"), [], {}, lambda _: fleet_now))
            await asyncio.sleep(0.01)
        (a, _), (b, _) = await first, await second
        return (a.placement.node if a.placement else None), b.unplaced_reason if b.placement is None else None

    placed_on, refused = asyncio.run(main())
    assert placed_on == "n0"
    assert batcher.runs == 2
    assert refused == "NoGpus"  # its node's agent went stale by the time its batch was decided
