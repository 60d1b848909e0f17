from __future__ import annotations

import pytest

from vram_operator.api.base import LabelSelector, LabelSelectorRequirement, ObjectMeta
from vram_operator.api.gpu_assignment import GpuAssignmentSpec, PlanEntry, ServerAssignment
from vram_operator.api.inference_server import InferenceServer, InferenceServerSpec, PlacedGpu, PlacementStatus
from vram_operator.controller.assignment import (
    HISTORY_LIMIT,
    plan_at_revision,
    plan_entry,
    record_revision,
    select_servers,
    selector_matches,
)
from vram_operator.errors import InputError


def server(ns: str, name: str, labels: dict[str, str] | None = None) -> InferenceServer:
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace=ns, labels=labels or {}),
        spec=InferenceServerSpec(engine="generic", image="img", vram_budget="1Gi"),
    )


def test_selector_semantics() -> None:
    selector = LabelSelector(
        match_labels={"team": "vision"},
        match_expressions=[
            LabelSelectorRequirement(key="tier", operator="In", values=["a", "b"]),
            LabelSelectorRequirement(key="legacy", operator="DoesNotExist"),
        ],
    )
    assert selector_matches(selector, {"team": "vision", "tier": "a"})
    assert not selector_matches(selector, {"team": "vision", "tier": "c"})
    assert not selector_matches(selector, {"team": "vision", "tier": "a", "legacy": "1"})
    assert not selector_matches(selector, {"tier": "a"})
    assert selector_matches(None, {})
    assert selector_matches(LabelSelector(), {"x": "y"})
    not_in = LabelSelector(match_expressions=[LabelSelectorRequirement(key="k", operator="NotIn", values=["v"])])
    assert selector_matches(not_in, {})
    assert not selector_matches(not_in, {"k": "v"})


def test_select_by_server_and_namespace_selectors_plus_pins() -> None:
    servers = [server("prod", "llm", {"team": "ml"}), server("prod", "yolo"), server("dev", "llm", {"team": "ml"})]
    spec = GpuAssignmentSpec(
        server_selector=LabelSelector(match_labels={"team": "ml"}),
        namespace_selector=LabelSelector(match_labels={"env": "prod"}),
        assignments=[ServerAssignment(server="dev/llm", node="n", gpus=[0])],
    )
    chosen = select_servers(spec, servers, {"prod": {"env": "prod"}, "dev": {}})
    assert [s.key for s in chosen] == ["dev/llm", "prod/llm"]


def placement(uuid: str, budget: float = 1000) -> PlacementStatus:
    return PlacementStatus(node="n", gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=budget)


def test_plan_entry_changed_flag() -> None:
    assert not plan_entry("a/b", placement("G0"), 0.5, placement("G0"), "").changed
    assert plan_entry("a/b", placement("G1"), 0.5, placement("G0"), "").changed
    assert plan_entry("a/b", placement("G0", 2000), 0.5, placement("G0"), "").changed
    assert plan_entry("a/b", placement("G0"), None, None, "").changed
    unplaced = plan_entry("a/b", None, None, placement("G0"), "no room")
    assert not unplaced.changed and unplaced.node is None


def test_history_keeps_last_ten_with_increasing_revisions() -> None:
    history: list = []
    for i in range(13):
        revision, history = record_revision(history, [PlanEntry(server=f"a/s{i}")], "VRAMBased", "t")
        assert revision == i + 1
    assert len(history) == HISTORY_LIMIT
    assert [h.revision for h in history] == list(range(4, 14))
    assert plan_at_revision(history, 5).plan[0].server == "a/s4"


def test_rollback_to_forgotten_revision_names_the_field() -> None:
    _, history = record_revision([], [], "Balanced", "t")
    with pytest.raises(InputError, match=r"spec\.rollbackToRevision"):
        plan_at_revision(history, 7)
