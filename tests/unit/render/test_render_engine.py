"""Engine command lines, environment and probes for vLLM, llama.cpp and generic servers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kube_schema import assert_valid
from render_builders import UUID_A, UUID_B, container, env_of, generic, llamacpp, placement, server, vllm

from vram_operator.render import LlamaCppLaunch, RenderError, RenderSettings, render_deployment
from vram_operator.render.engine import LLAMACPP_OWNED_FLAGS, VLLM_OWNED_FLAGS, drop_owned_flags

SETTINGS = RenderSettings()


def rendered_container(spec: dict[str, Any], utilization: float | None = 0.5, **kwargs: Any) -> dict[str, Any]:
    uuids = (UUID_A, UUID_B)[: spec.get("tensorParallelSize", 1)]
    deployment = render_deployment(server(spec), placement(*uuids), utilization, SETTINGS, **kwargs).deployment
    assert_valid(deployment)
    return container(deployment)


def flag_value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} appears {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def test_vllm_command_line_carries_what_the_spec_sets() -> None:
    spec = vllm(
        tensorParallelSize=2,
        maxModelLen=8192,
        maxNumSeqs=64,
        maxNumBatchedTokens=4096,
        kvCacheDtype="fp8",
        model={"name": "Qwen/Qwen2.5-7B-Instruct", "dtype": "bfloat16", "quantization": "awq"},
        args=["--enable-prefix-caching"],
    )
    engine = rendered_container(spec, 0.4123456)
    args = engine["args"]
    assert engine["command"] == ["vllm", "serve"]
    assert args[0] == "Qwen/Qwen2.5-7B-Instruct"
    assert flag_value(args, "--gpu-memory-utilization") == "0.4123"
    assert flag_value(args, "--tensor-parallel-size") == "2"
    assert flag_value(args, "--max-model-len") == "8192"
    assert flag_value(args, "--max-num-seqs") == "64"
    assert flag_value(args, "--max-num-batched-tokens") == "4096"
    assert flag_value(args, "--kv-cache-dtype") == "fp8"
    assert flag_value(args, "--dtype") == "bfloat16"
    assert flag_value(args, "--quantization") == "awq"
    assert flag_value(args, "--port") == "8000"
    assert args[-1] == "--enable-prefix-caching"


def test_vllm_leaves_out_what_the_spec_does_not_set() -> None:
    args = rendered_container(vllm(model={"name": "m", "quantization": "gguf-Q4_K_M"}), 0.9)["args"]
    assert args == ["m", "--gpu-memory-utilization", "0.9", "--port", "8000"]


def test_vllm_serves_a_mounted_path_under_the_model_name() -> None:
    args = rendered_container(vllm(model={"name": "Qwen/Qwen2.5-7B-Instruct", "path": "/models/qwen"}))["args"]
    assert args[0] == "/models/qwen"
    assert flag_value(args, "--served-model-name") == "Qwen/Qwen2.5-7B-Instruct"


@pytest.mark.parametrize(
    "user_args",
    [
        ["--gpu-memory-utilization", "0.9", "--enforce-eager"],
        ["--gpu-memory-utilization=0.9", "--enforce-eager"],
    ],
)
def test_spec_utilization_wins_over_one_in_args(user_args: list[str]) -> None:
    rendered = render_deployment(server(vllm(args=user_args)), placement(), 0.37, SETTINGS)
    args = container(rendered.deployment)["args"]
    assert flag_value(args, "--gpu-memory-utilization") == "0.37"
    assert "0.9" not in args and "--gpu-memory-utilization=0.9" not in args
    assert args[-1] == "--enforce-eager"
    assert any("--gpu-memory-utilization ignored" in warning for warning in rendered.warnings)


@pytest.mark.parametrize("utilization", [None, 0.0, 1.2])
def test_vllm_without_a_usable_utilization_is_an_error(utilization: float | None) -> None:
    with pytest.raises(RenderError) as raised:
        render_deployment(server(vllm()), placement(), utilization, SETTINGS)
    assert raised.value.field == "status.gpuMemoryUtilization"


def test_cache_type_of_the_other_engine_is_an_error() -> None:
    with pytest.raises(RenderError, match=r"spec\.kvCacheDtype"):
        render_deployment(server(vllm(kvCacheDtype="q8_0")), placement(), 0.5, SETTINGS)
    with pytest.raises(RenderError, match=r"spec\.kvCacheDtype"):
        render_deployment(server(llamacpp(kvCacheDtype="fp8")), placement(), None, SETTINGS)


def test_llamacpp_uses_the_sizing_result() -> None:
    launch = LlamaCppLaunch(n_gpu_layers=31, context_length=8192, parallel=2)
    engine = rendered_container(llamacpp(kvCacheDtype="q8_0", args=["--jinja"]), None, launch=launch)
    args = engine["args"]
    assert engine["command"] == ["/app/llama-server"]
    assert args[:2] == ["-m", "/models/model.gguf"]
    assert flag_value(args, "--n-gpu-layers") == "31"
    assert flag_value(args, "-c") == "8192"
    assert flag_value(args, "--parallel") == "2"
    assert flag_value(args, "--cache-type-k") == "q8_0"
    assert flag_value(args, "--cache-type-v") == "q8_0"
    assert flag_value(args, "--host") == "0.0.0.0"
    assert flag_value(args, "--port") == "8080"
    assert args[-1] == "--jinja"


def test_llamacpp_without_sizing_offloads_everything_at_the_spec_context() -> None:
    args = rendered_container(llamacpp(maxModelLen=4096, maxNumSeqs=4, args=["-ngl", "10"]), None)["args"]
    assert flag_value(args, "--n-gpu-layers") == "999"
    assert flag_value(args, "-c") == "4096"
    assert flag_value(args, "--parallel") == "4"
    assert "-ngl" not in args


def test_llamacpp_downloads_by_name_and_quant_tag_without_a_path() -> None:
    spec = llamacpp(model={"name": "unsloth/Nemotron-3-Nano-30B-A3B-GGUF", "quantization": "gguf-Q4_K_M"})
    args = rendered_container(spec, None)["args"]
    assert args[:2] == ["-hf", "unsloth/Nemotron-3-Nano-30B-A3B-GGUF:Q4_K_M"]


def test_generic_keeps_the_image_entrypoint_and_gets_its_budget() -> None:
    spec = generic(args=["--model", "yolo26n.pt", "--port", "9000"])
    deployment = render_deployment(server(spec), placement(budget_mib=650), None, SETTINGS).deployment
    engine = container(deployment)
    assert "command" not in engine
    assert engine["args"] == spec["args"]
    env = env_of(deployment)
    assert env["VRAM_BUDGET_MIB"] == "650"
    assert env["VRAM_BUDGET_GB"] == "0.63"
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & engine.keys()


def test_generic_tcp_probe_when_enabled() -> None:
    settings = RenderSettings(generic_tcp_probe=True, generic_port=7000)
    engine = container(render_deployment(server(generic()), placement(), None, settings).deployment)
    assert engine["ports"] == [{"name": "http", "containerPort": 7000, "protocol": "TCP"}]
    assert engine["readinessProbe"]["tcpSocket"] == {"port": "http"}


@pytest.mark.parametrize(("spec", "port"), [(vllm(), 8000), (llamacpp(), 8080)])
def test_llm_engines_are_probed_on_health_with_a_long_startup(spec: dict[str, Any], port: int) -> None:
    engine = rendered_container(spec)
    assert engine["ports"][0]["containerPort"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert engine[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = engine["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60


owned_flag = st.sampled_from(sorted(VLLM_OWNED_FLAGS | LLAMACPP_OWNED_FLAGS))
plain_arg = st.from_regex(r"--?[a-z][a-z-]{0,12}(=[a-z0-9]{1,4})?|[a-z0-9.]{1,6}", fullmatch=True).filter(
    lambda arg: arg.partition("=")[0] not in VLLM_OWNED_FLAGS | LLAMACPP_OWNED_FLAGS
)


@given(
    st.lists(
        st.one_of(
            plain_arg.map(lambda arg: [arg]),
            st.tuples(owned_flag, st.from_regex(r"[0-9.]{1,4}", fullmatch=True)).map(list),
            owned_flag.map(lambda flag: [f"{flag}=1"]),
        ),
        max_size=8,
    )
)
def test_dropping_owned_flags_keeps_every_other_argument_in_order(groups: list[list[str]]) -> None:
    owned = {**VLLM_OWNED_FLAGS, **LLAMACPP_OWNED_FLAGS}
    args = [arg for group in groups for arg in group]
    kept, warnings = drop_owned_flags(args, owned)
    expected = [group[0] for group in groups if group[0].partition("=")[0] not in owned]
    assert kept == expected
    assert len(warnings) == len(groups) - len(expected)
