"""Engine command lines, environment and probes for vLLM, llama.cpp and generic servers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kube_schema import assert_valid
from pydantic import ValidationError
from render_builders import UUID_A, UUID_B, container, env_of, generic, llamacpp, placement, server, vllm

from vram_operator.api.owned_flags import OWNED_FLAGS
from vram_operator.render import LlamaCppLaunch, RenderError, RenderSettings, render_deployment

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
    ("spec", "user_args"),
    [
        (vllm(), ["--gpu_memory_utilization", "0.9", "--enforce-eager"]),
        (vllm(), ["--enforce-eager", "--gpu-memory-utilization=0.9"]),
        (llamacpp(), ["-ngl", "10"]),
    ],
)
def test_an_owned_flag_that_skipped_validation_is_never_rendered(spec: dict[str, Any], user_args: list[str]) -> None:
    built = server(spec)
    built.spec.args = user_args  # as code could, after validation
    with pytest.raises(RenderError, match="must not set") as raised:
        render_deployment(built, placement(), 0.37, SETTINGS)
    assert raised.value.field == "spec.args"


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
    args = rendered_container(llamacpp(maxModelLen=4096, maxNumSeqs=4), None)["args"]
    assert flag_value(args, "--n-gpu-layers") == "999"
    assert flag_value(args, "-c") == "4096"
    assert flag_value(args, "--parallel") == "4"


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


@pytest.mark.parametrize(
    ("spec", "budget_mib"), [(generic(tensorParallelSize=2), 650.9), (llamacpp(tensorParallelSize=2), 9000.0)]
)
def test_the_budget_is_a_hami_core_memory_limit_on_every_gpu(spec: dict[str, Any], budget_mib: float) -> None:
    """CUDA_DEVICE_MEMORY_LIMIT (every device) and _<i> (per visible device) in MiB with HAMi-core's
    `m` suffix, rounded down: the cap never exceeds what the ledger holds."""
    env = env_of(
        render_deployment(server(spec), placement(UUID_A, UUID_B, budget_mib=budget_mib), None, SETTINGS).deployment
    )
    limit = f"{int(budget_mib)}m"
    limits = {name: value for name, value in env.items() if name.startswith("CUDA_DEVICE_MEMORY_LIMIT")}
    assert limits == {
        "CUDA_DEVICE_MEMORY_LIMIT": limit,
        "CUDA_DEVICE_MEMORY_LIMIT_0": limit,
        "CUDA_DEVICE_MEMORY_LIMIT_1": limit,
    }


def test_vllm_gets_no_memory_limit() -> None:
    """HAMi-core would shrink the card vLLM sees to the cap, and the computed utilization is a
    fraction of the physical card: a cap would cut vLLM's reservation to utilization x budget."""
    env = env_of(render_deployment(server(vllm()), placement(budget_mib=9000), 0.37, SETTINGS).deployment)
    assert not [name for name in env if name.startswith("CUDA_DEVICE_MEMORY_LIMIT")]


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


def _canonical(arg: str) -> str:
    """The long option a vLLM / llama.cpp argument sets when it is spelled in full."""
    name = arg.partition("=")[0]
    return name.replace("_", "-") if name.startswith("--") else name


owned_spelling = st.sampled_from([flag for owned in OWNED_FLAGS for flag in owned.flags]).flatmap(
    lambda flag: st.sampled_from([flag, f"{flag}=1", flag.replace("-", "_").replace("__", "--", 1)])
)
plain_arg = st.from_regex(r"--?[a-z][a-z-]{0,12}(=[a-z0-9]{1,4})?|[a-z0-9.]{1,6}", fullmatch=True)


@given(st.sampled_from([vllm(), llamacpp()]), st.lists(owned_spelling | plain_arg, max_size=8))
def test_validated_args_never_repeat_a_flag_the_operator_sets(spec: dict[str, Any], user_args: list[str]) -> None:
    try:
        built = server({**spec, "args": user_args})
    except ValidationError:
        return
    launch = LlamaCppLaunch(n_gpu_layers=20, context_length=4096, parallel=2)
    args = container(render_deployment(built, placement(), 0.5, SETTINGS, launch=launch).deployment)["args"]
    ours = {_canonical(arg) for arg in args[: len(args) - len(user_args)] if arg.startswith("-")}
    assert args[len(args) - len(user_args) :] == user_args
    owned_by_engine = {flag for owned in OWNED_FLAGS if owned.engine == spec["engine"] for flag in owned.flags}
    assert ours <= owned_by_engine
    assert not {_canonical(arg) for arg in user_args} & owned_by_engine


@pytest.mark.parametrize(
    "spec",
    [
        vllm(
            tensorParallelSize=2,
            maxModelLen=8192,
            maxNumSeqs=64,
            maxNumBatchedTokens=4096,
            kvCacheDtype="fp8",
            model={"name": "Qwen/Qwen2.5-7B-Instruct", "path": "/m", "dtype": "bfloat16", "quantization": "awq"},
        ),
        llamacpp(kvCacheDtype="q8_0"),
        llamacpp(model={"name": "unsloth/Qwen3-GGUF", "quantization": "gguf-Q4_K_M"}),
    ],
)
def test_every_flag_the_renderer_sets_is_owned(spec: dict[str, Any]) -> None:
    launch = LlamaCppLaunch(n_gpu_layers=20, context_length=4096, parallel=2)
    args = rendered_container(spec, launch=launch)["args"]
    owned_by_engine = {flag for owned in OWNED_FLAGS if owned.engine == spec["engine"] for flag in owned.flags}
    assert {arg for arg in args if arg.startswith("-")} <= owned_by_engine
