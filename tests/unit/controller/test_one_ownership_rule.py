"""The healer's headroom and the planner's free capacity count memory that is not ours the same way."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode, GpuNodeStatus, GpuProcess
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller.gpu_view import headroom_mib, process_owners
from vram_operator.controller.pods import PodFacts
from vram_operator.decide import decide

TOTAL = 24564.0
UUID = "GPU-w0"


def _server(name: str, budget: float | None) -> InferenceServer:
    status = None
    if budget is not None:
        placement = PlacementStatus(node="w", gpus=[PlacedGpu(index=0, uuid=UUID, total_mib=TOTAL)], budget_mib=budget)
        status = InferenceServerStatus(placement=placement)
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace="ai"),
        spec=InferenceServerSpec(engine="generic", image="i", vram_budget="1Gi"),
        status=status,
    )


def _pod(uid: str, name: str) -> PodFacts:
    return PodFacts(uid, name, "ai", True, 0, False, "engine", "")


# Processes: (kind, MiB). Kinds: the healed server's pod, the other server's pod, a pod whose name starts
# with the healed server's name but whose UID is no server's, a pod UID of nothing known, no pod at all.
KINDS = ("chat", "other", "lookalike", "unknown-uid", "desktop")
processes = st.lists(
    st.tuples(st.sampled_from(KINDS), st.one_of(st.none(), st.floats(min_value=0, max_value=3000))), max_size=8
)


def _process(pid: int, kind: str, used: float | None) -> GpuProcess:
    if kind == "chat":
        return GpuProcess(pid=pid, used_mib=used, pod_uid="uid-chat", pod_namespace="ai", pod_name="chat-5d-a")
    if kind == "other":
        return GpuProcess(pid=pid, used_mib=used, pod_uid="uid-other", pod_namespace="ai", pod_name="other-7c-b")
    if kind == "lookalike":
        return GpuProcess(pid=pid, used_mib=used, pod_uid="uid-x", pod_namespace="ai", pod_name="chat-impostor-0")
    if kind == "unknown-uid":
        return GpuProcess(pid=pid, used_mib=used, pod_uid=f"uid-{pid}")
    return GpuProcess(pid=pid, used_mib=used, name="Xorg")


@settings(max_examples=120, deadline=None)
@given(
    listed=processes,
    unattributed=st.floats(min_value=0, max_value=2000),
    driver_reserved=st.floats(min_value=0, max_value=1000),
    other_budget=st.floats(min_value=100, max_value=8000),
    margin=st.sampled_from([0.0, 256.0]),
)
def test_healer_headroom_minus_margin_is_the_planners_free_capacity(
    listed: list[tuple[str, float | None]],
    unattributed: float,
    driver_reserved: float,
    other_budget: float,
    margin: float,
) -> None:
    gpu = GpuDeviceStatus(
        index=0,
        uuid=UUID,
        name="NVIDIA RTX A5500",
        memory_total_mib=TOTAL,
        memory_used_mib=0,
        memory_free_mib=0,
        memory_reserved_mib=driver_reserved,
        unattributed_mib=unattributed,
        processes=[_process(100 + i, kind, used) for i, (kind, used) in enumerate(listed)],
    )
    nodes = [GpuNode(metadata=ObjectMeta(name="w"), status=GpuNodeStatus(gpus=[gpu]))]
    chat, other = _server("chat", None), _server("other", other_budget)  # chat: the server being healed
    pods = {"ai/chat": [_pod("uid-chat", "chat-5d-a")], "ai/other": [_pod("uid-other", "other-7c-b")]}

    healer = headroom_mib(UUID, "w", nodes, [other], process_owners([chat, other], pods))
    uids = {key: {pod.uid for pod in found} for key, found in pods.items()}
    (summary,) = decide([], nodes, reserved=[other], margin_mib=margin, pod_uids=uids).plan.gpus
    # What the planner would give a new server there (chat): total - not ours - reservations - margin.
    assert summary.foreign_mib == pytest.approx(
        driver_reserved + unattributed + sum(used or 0 for kind, used in listed if kind not in ("chat", "other"))
    )
    assert healer == pytest.approx(max(0.0, summary.free_after_mib + margin))
