"""kubectl vram: the pure parts (owners, tables, moves, explain) with objects in memory."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console, RenderableType

from vram_operator.api import GpuNode, InferenceServer
from vram_operator.api.gpu_node import GpuProcess
from vram_operator.controller.gpu_view import reserved_by
from vram_operator.decide import decide
from vram_operator.kubectl_plugin import (
    Owner,
    PluginError,
    build_parser,
    explain,
    main,
    moves,
    moves_table,
    not_sized_table,
    owner_of,
    parse_server,
    split_server,
    top_table,
)
from vram_operator.placement.ownership import ProcessOwners


def text_of(renderable: RenderableType) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=220, color_system=None).print(renderable)
    return buffer.getvalue()


def gpu_node(name: str, gpus: list[dict[str, Any]]) -> GpuNode:
    return GpuNode.model_validate({"kind": "GpuNode", "metadata": {"name": name}, "status": {"gpus": gpus}})


def gpu(
    index: int, uuid: str, total: float, used: float, processes: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": uuid,
        "name": "NVIDIA RTX A5500" if index == 0 else "NVIDIA RTX A400",
        "memoryTotalMiB": total,
        "memoryUsedMiB": used,
        "memoryFreeMiB": total - used,
        "processes": processes,
        **extra,
    }


def server(name: str, namespace: str = "ai", status: dict[str, Any] | None = None, **spec: Any) -> InferenceServer:
    body: dict[str, Any] = {
        "kind": "InferenceServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "generic", "image": "img", "vramBudget": "650Mi", **spec},
    }
    if status is not None:
        body["status"] = status
    return InferenceServer.model_validate(body)


def placed(node: str, uuid: str, index: int, budget: float, **extra: Any) -> dict[str, Any]:
    return {
        "phase": "Running",
        "placement": {"node": node, "gpus": [{"index": index, "uuid": uuid}], "budgetMiB": budget, **extra},
    }


WORKSTATION = gpu_node(
    "workstation",
    [
        gpu(
            0,
            "GPU-a",
            24564,
            7200,
            [
                {"pid": 4242, "usedMiB": 6134, "podUID": "u1", "podNamespace": "ai", "podName": "chat-7d9f-x2x"},
                {"pid": 1800, "usedMiB": 350, "name": "Xorg"},
                {"pid": 77, "usedMiB": 500, "podUID": "u2", "podNamespace": "ai", "podName": "yolo-5c-abc"},
            ],
            unattributedMiB=216,
        ),
        gpu(
            1, "GPU-b", 4094, 650, [{"pid": 900, "usedMiB": 650, "podUID": "u3", "podNamespace": "web", "podName": "x"}]
        ),
    ],
)


def test_owner_is_the_server_whose_pods_have_the_uid_else_the_pod() -> None:
    owners = ProcessOwners.of(["ai/chat", "ai/yolo", "ai/yolo-big"], {"ai/chat": {"u-chat"}, "ai/yolo-big": {"u-big"}})
    by_uid = GpuProcess(pid=1, pod_namespace="ai", pod_name="chat-7d9f-x2x", pod_uid="u-chat")
    by_other_uid = GpuProcess(pid=2, pod_namespace="ai", pod_name="yolo-big-5c-abc", pod_uid="u-big")
    lookalike = GpuProcess(pid=3, pod_namespace="ai", pod_name="chat-impostor-1", pod_uid="u-else")
    no_uid = GpuProcess(pid=6, pod_namespace="ai", pod_name="yolo-big-5c-abc")  # hand-written: name rule
    foreign = GpuProcess(pid=4, name="Xorg")
    unnamed = GpuProcess(pid=5)
    assert owner_of(by_uid, owners) == Owner("server", "ai/chat")
    assert owner_of(by_other_uid, owners) == Owner("server", "ai/yolo-big")
    assert owner_of(lookalike, owners) == Owner("pod", "ai/chat-impostor-1")  # the name alone proves nothing
    assert owner_of(no_uid, owners) == Owner("server", "ai/yolo-big")  # longest name wins
    assert owner_of(foreign, owners).text() == "foreign: Xorg"
    assert owner_of(unnamed, owners).text() == "foreign: pid 5"


def test_top_shows_every_gpu_and_process_with_owners_and_reservations() -> None:
    servers = [server("chat", status=placed("workstation", "GPU-a", 0, 8000)), server("yolo")]
    text = text_of(top_table([WORKSTATION], servers, {"ai/chat": {"u1"}, "ai/yolo": {"u2"}}))
    assert "7,200MiB / 24,564MiB" in text
    assert "29.3%" in text  # 7200 / 24564
    assert "8,000MiB" in text  # reserved by chat
    assert "infs ai/chat" in text and "infs ai/yolo" in text
    assert "foreign: Xorg" in text and "pod web/x" in text
    assert "unattributed" in text and "216MiB" in text
    # processes biggest first
    assert text.index("4242") < text.index("77 ") < text.index("1800")


def test_top_names_a_node_the_agent_has_not_reported() -> None:
    silent = GpuNode.model_validate({"kind": "GpuNode", "metadata": {"name": "h100-9"}})
    assert "no report from the agent yet" in text_of(top_table([silent], [], {}))


def test_lost_gpu_is_flagged() -> None:
    lost = gpu_node("n", [gpu(0, "GPU-z", 81559, 0, [], healthy=False)])
    assert "LOST" in text_of(top_table([lost], [], {}))


def state_of(used: float, foreign: float, reserved: float) -> str:
    """The STATE column of one 8192 MiB GPU with `foreign` MiB of Xorg and `reserved` MiB for a server."""
    processes = [{"pid": 9, "usedMiB": foreign, "name": "Xorg"}] if foreign else []
    node = gpu_node("n", [gpu(0, "GPU-s", 8192, used, processes)])
    servers = [server("chat", status=placed("n", "GPU-s", 0, reserved))] if reserved else []
    text = text_of(top_table([node], servers, {}))
    return next(word for word in ("LOST", "FULL", "OVERCOMMITTED", "ok") if f" {word} " in text)


def test_top_does_not_say_ok_when_foreign_use_fills_the_gpu() -> None:
    """Issue 9 defect 10: a foreign process grew until the GPU was full."""
    assert state_of(used=8192, foreign=8192, reserved=4096) == "FULL"
    assert state_of(used=8192, foreign=4096, reserved=4096) == "FULL"
    assert state_of(used=4097, foreign=4097, reserved=4096) == "OVERCOMMITTED"  # a restart of chat would fail
    assert state_of(used=4096, foreign=4096, reserved=4096) == "ok"  # exactly full on paper still fits


@given(st.lists(st.tuples(st.sampled_from(["GPU-a", "GPU-b", "GPU-c"]), st.floats(0, 80000)), max_size=12))
def test_reservations_add_up_per_gpu(entries: list[tuple[str, float]]) -> None:
    servers = [server(f"s{i}", status=placed("n", uuid, 0, budget)) for i, (uuid, budget) in enumerate(entries)]
    reserved = reserved_by([*servers, server("unplaced")])
    assert set(reserved) == {uuid for uuid, _ in entries}
    assert sum(reserved.values()) == pytest.approx(sum(budget for _, budget in entries))


def test_moves_compare_the_plan_with_the_live_placement() -> None:
    small = gpu_node("ws", [gpu(0, "GPU-a", 24564, 0, []), gpu(1, "GPU-b", 4094, 0, [])])
    here = server("here", vramBudget="1Gi", status=placed("ws", "GPU-a", 0, 1024))
    wrong = server("wrong", vramBudget="1Gi", status=placed("elsewhere", "GPU-q", 3, 1024))
    new = server("new", vramBudget="1Gi")
    huge = server("huge", vramBudget="100Gi", status=placed("ws", "GPU-a", 0, 102400))
    servers = [here, wrong, new, huge]
    decision = decide(servers, [small], strategy="VRAMBased")
    planned = {p.server: (p.node, p.gpu_indices) for p in decision.plan.placements}
    changed = {m.server: m for m in moves(servers, decision)}
    assert planned["ai/here"] == ("ws", (0,))
    assert "ai/here" not in changed  # planned where it already is
    assert changed["ai/wrong"].now == "elsewhere:3"
    assert changed["ai/new"].now == "-" and changed["ai/new"].planned.startswith("ws:")
    assert changed["ai/huge"].planned == "-"  # 100 GiB fits nowhere
    assert "ai/wrong" in text_of(moves_table(list(changed.values())))
    assert "No server would move" in text_of(moves_table([]))


def test_not_sized_lists_servers_whose_spec_cannot_be_sized() -> None:
    node = gpu_node("ws", [gpu(0, "GPU-a", 24564, 0, [])])
    broken = server("broken", engine="vllm", vramBudget=None, model={"name": "m", "configMapRef": {"name": "gone"}})
    table = not_sized_table(decide([broken, server("ok")], [node], config_maps={}))
    assert table is not None
    text = text_of(table)
    assert "ai/broken" in text and "spec.model.configMapRef" in text and "not found" in text
    assert "ai/ok" not in text
    assert not_sized_table(decide([server("ok")], [node])) is None


def test_explain_tells_where_why_and_what_went_wrong() -> None:
    status = placed("workstation", "GPU-a", 0, 8000.5, strategy="VRAMBased", reason="most free memory after margin")
    status |= {
        "estimate": {
            "weightsMiB": 5800,
            "kvCacheMiB": 1500,
            "totalMiB": 8000.5,
            "kvCacheTokens": 28672,
            "source": "config",
        },
        "gpuMemoryUtilization": 0.33,
        "utilizationMode": "auto",
        "memory": {
            "usedMiB": 6134,
            "totalMiB": 24564,
            "percent": 25.0,
            "display": "Memory: 6134MiB / 24564MiB (25.0%)",
        },
        "warnings": ["maxModelLen reduced to 8192"],
        "conditions": [{"type": "Placed", "status": "True", "reason": "Placed", "message": "on workstation GPU 0"}],
    }
    text = text_of(explain(server("chat", status=status)))
    for expected in (
        "InferenceServer ai/chat",
        "Phase: Running",
        "Placed on workstation",
        "budget 8,000MiB per GPU (strategy VRAMBased)",  # mib_text rounds
        "Why: most free memory after margin",
        "gpu-memory-utilization 0.33 (auto)",
        "Measured: Memory: 6134MiB / 24564MiB (25.0%)",
        "28,672",
        "maxModelLen reduced to 8192",
        "on workstation GPU 0",
    ):
        assert expected in text, expected


def test_explain_without_status_or_placement() -> None:
    assert "has not reconciled" in text_of(explain(server("new")))
    pending = server("p", status={"phase": "Pending", "warnings": ["no GPU has 650MiB free"]})
    text = text_of(explain(pending))
    assert "Not placed." in text and "no GPU has 650MiB free" in text


def test_a_status_from_another_version_does_not_hide_the_server() -> None:
    body = server("chat").wire() | {"status": {"phase": "Running", "futureField": 1}}
    parsed = parse_server(body)
    assert parsed.key == "ai/chat" and parsed.status is None


@pytest.mark.parametrize(
    ("reference", "namespace", "expected"),
    [("chat", None, ("default", "chat")), ("chat", "ai", ("ai", "chat")), ("ml/chat", "ai", ("ml", "chat"))],
)
def test_server_reference(reference: str, namespace: str | None, expected: tuple[str, str]) -> None:
    assert split_server(reference, namespace) == expected


@pytest.mark.parametrize("reference", ["/chat", "ml/", "a/b/c"])
def test_bad_server_reference_names_the_argument(reference: str) -> None:
    with pytest.raises(PluginError, match=r"^server: "):
        split_server(reference, None)


def test_bad_kubeconfig_is_one_line_and_exit_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["--kubeconfig", str(missing), "top"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kubectl-vram: error: --kubeconfig:") and "\n" not in err


def test_plan_refuses_the_manual_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plan", "--strategy", "Manual"])
    assert "invalid choice" in capsys.readouterr().err


def test_moves_and_explain_show_each_replica() -> None:
    node = gpu_node("ws", [gpu(0, "GPU-a", 24564, 0, []), gpu(1, "GPU-b", 24564, 0, [])])
    status = placed("ws", "GPU-a", 0, 1024)
    status["replicaPlacements"] = [{**status["placement"], "replica": 0}]
    det = server("det", vramBudget="1Gi", replicas=2, status=status)
    changed = {m.server: m for m in moves([det], decide([det], [node]))}
    assert "ai/det" not in changed  # replica 0 is planned where it runs
    assert changed["ai/det[1]"].now == "-" and changed["ai/det[1]"].planned == "ws:1"
    text = text_of(explain(det))
    assert "Replicas placed: 1/2" in text and "replica 0: ws GPU 0" in text
    assert reserved_by([det]) == {"GPU-a": 1024}
