"""A pipeline-parallel vLLM server: TP x PP GPUs pinned, both parallel flags, shared memory for NCCL."""

from __future__ import annotations

import pytest
from kube_schema import assert_valid
from render_builders import UUID_A, UUID_B, container, env_of, placement, server, vllm

from vram_operator.render import RenderError, RenderSettings, render_deployment

SETTINGS = RenderSettings()
UUIDS = (UUID_A, UUID_B, "GPU-00000000-0000-0000-0000-000000000003", "GPU-00000000-0000-0000-0000-000000000004")


def _flag(args: list[str], flag: str) -> str | None:
    assert args.count(flag) <= 1, args
    return args[args.index(flag) + 1] if flag in args else None


def test_pp2_tp2_runs_on_four_pinned_gpus_with_both_flags() -> None:
    deployment = render_deployment(
        server(vllm(tensorParallelSize=2, pipelineParallelSize=2)), placement(*UUIDS), 0.8, SETTINGS
    ).deployment
    assert_valid(deployment)
    args = container(deployment)["args"]
    assert (_flag(args, "--tensor-parallel-size"), _flag(args, "--pipeline-parallel-size")) == ("2", "2")
    assert env_of(deployment)["NVIDIA_VISIBLE_DEVICES"] == ",".join(UUIDS)
    mounts = {mount["mountPath"] for mount in container(deployment)["volumeMounts"]}
    assert "/dev/shm" in mounts


def test_pipeline_only_gets_its_flag_and_shared_memory_but_no_tensor_flag() -> None:
    deployment = render_deployment(
        server(vllm(pipelineParallelSize=2)), placement(UUID_A, UUID_B), 0.8, SETTINGS
    ).deployment
    args = container(deployment)["args"]
    assert (_flag(args, "--tensor-parallel-size"), _flag(args, "--pipeline-parallel-size")) == (None, "2")
    assert "/dev/shm" in {mount["mountPath"] for mount in container(deployment)["volumeMounts"]}


def test_one_stage_renders_no_pipeline_flag() -> None:
    args = container(render_deployment(server(vllm()), placement(), 0.8, SETTINGS).deployment)["args"]
    assert "--pipeline-parallel-size" not in args


@pytest.mark.parametrize("gpus", [UUIDS[:2], UUIDS[:3]])
def test_fewer_gpus_than_tp_times_pp_is_refused(gpus: tuple[str, ...]) -> None:
    with pytest.raises(RenderError, match="tensorParallelSize x pipelineParallelSize needs 4") as error:
        render_deployment(server(vllm(tensorParallelSize=2, pipelineParallelSize=2)), placement(*gpus), 0.8, SETTINGS)
    assert error.value.field == "status.placement.gpus"
