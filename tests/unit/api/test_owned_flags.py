"""spec.args: every spelling of a flag the operator owns is refused, naming the spec field to use."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from vram_operator.api import InferenceServer
from vram_operator.api.owned_flags import OWNED_FLAGS, OwnedFlags, owned_flag_errors

SPECS: dict[str, dict[str, Any]] = {
    "vllm": {"engine": "vllm", "image": "vllm/vllm-openai:v0.19.0", "model": {"name": "Qwen/Qwen2.5-7B"}},
    "llamacpp": {"engine": "llamacpp", "image": "llama:server", "model": {"path": "/models/m.gguf"}},
    "generic": {"engine": "generic", "image": "yolo:1", "vramBudget": "650Mi"},
}


def _server(engine: str, args: list[str]) -> dict[str, Any]:
    return {"kind": "InferenceServer", "metadata": {"name": "s", "namespace": "ai"},
            "spec": {**SPECS[engine], "args": args}}  # fmt: skip


def _refusal(engine: str, args: list[str]) -> str:
    with pytest.raises(ValidationError) as error:
        InferenceServer.model_validate(_server(engine, args))
    return str(error.value)


# The spellings the issue names, each with the field the refusal must point to.
@pytest.mark.parametrize(
    ("engine", "args", "field"),
    [
        ("vllm", ["--gpu-memory-utilization", "0.95"], "spec.gpuMemoryUtilization"),
        ("vllm", ["--gpu_memory_utilization", "0.95"], "spec.gpuMemoryUtilization"),
        ("vllm", ["--gpu-memory-utilization=0.95"], "spec.gpuMemoryUtilization"),
        ("vllm", ["--gpu_memory_utilization=0.95"], "spec.gpuMemoryUtilization"),
        ("vllm", ["--gpu-memory-util", "0.95"], "spec.gpuMemoryUtilization"),  # argparse abbreviation
        ("vllm", ["--kv-cache-memory-bytes", "8000000000"], "spec.gpuMemoryUtilization"),
        ("vllm", ["--tensor-parallel-size", "2"], "spec.tensorParallelSize"),
        ("vllm", ["--tensor_parallel_size=2"], "spec.tensorParallelSize"),
        ("vllm", ["-tp", "2"], "spec.tensorParallelSize"),
        ("vllm", ["-tp=2"], "spec.tensorParallelSize"),
        ("vllm", ["--pipeline-parallel-size", "2"], "spec.pipelineParallelSize"),
        ("vllm", ["-pp", "2"], "spec.pipelineParallelSize"),
        ("vllm", ["--pipeline_parallel_size=2"], "spec.pipelineParallelSize"),
        ("vllm", ["--pipeline-parallel", "2"], "spec.pipelineParallelSize"),
        ("vllm", ["-pp=2"], "spec.pipelineParallelSize"),
        ("vllm", ["--data-parallel-size", "2"], "spec.replicas"),
        ("vllm", ["--max-model-len", "32768"], "spec.maxModelLen"),
        ("vllm", ["--max_model_len=32768"], "spec.maxModelLen"),
        ("vllm", ["--max-num-seqs", "8"], "spec.maxNumSeqs"),
        ("vllm", ["--max-num-batched-tokens", "8192"], "spec.maxNumBatchedTokens"),
        ("vllm", ["--kv-cache-dtype", "fp8"], "spec.kvCacheDtype"),
        ("vllm", ["--kv_cache_dtype=fp8"], "spec.kvCacheDtype"),
        ("vllm", ["--quantization", "awq"], "spec.model.quantization"),
        ("vllm", ["-qawq"], "spec.model.quantization"),
        ("vllm", ["--dtype", "half"], "spec.model.dtype"),
        ("llamacpp", ["-ngl", "99"], "spec.maxModelLen"),
        ("llamacpp", ["--n-gpu-layers", "99"], "spec.maxModelLen"),
        ("llamacpp", ["--n_gpu_layers", "99"], "spec.maxModelLen"),
        ("llamacpp", ["--gpu-layers=99"], "spec.maxModelLen"),
        ("llamacpp", ["-c", "32768"], "spec.maxModelLen"),
        ("llamacpp", ["--ctx-size", "32768"], "spec.maxModelLen"),
        ("llamacpp", ["--ctx_size", "32768"], "spec.maxModelLen"),
        ("llamacpp", ["-np", "4"], "spec.maxNumSeqs"),
        ("llamacpp", ["--parallel", "4"], "spec.maxNumSeqs"),
        ("llamacpp", ["-ctk", "q8_0"], "spec.kvCacheDtype"),
        ("llamacpp", ["--cache-type-v", "q8_0"], "spec.kvCacheDtype"),
    ],
)
def test_owned_flag_is_refused_naming_the_field(engine: str, args: list[str], field: str) -> None:
    message = _refusal(engine, ["--seed", "1", *args])
    assert "spec.args" in message
    assert field in message
    assert args[0] in message


@pytest.mark.parametrize(
    ("engine", "args"),
    [
        ("vllm", ["--enable-prefix-caching", "--enforce-eager", "--trust-remote-code"]),
        ("vllm", ["--max-loras", "4", "--max-lora-rank", "16", "--seed", "1"]),
        ("vllm", ["--model-impl", "transformers", "--served-model-name-suffix"]),
        ("vllm", ["--compilation-config.level", "3", "-O3", "--chat-template", "/t.jinja"]),
        ("vllm", ["--gpu-memory-utilizationx"]),  # not a prefix: vLLM refuses it itself
        ("llamacpp", ["--jinja", "-fa", "on", "-cb", "-mg", "0", "--threads", "8", "-cmoe"]),
        ("llamacpp", ["--ctx-size-draft", "4096", "-cd", "4096", "--n-gpu-layers-draft", "99"]),
        ("generic", ["--port", "9000", "--gpu-memory-utilization", "0.9", "-c", "conf.yaml"]),
    ],
)
def test_other_arguments_are_kept(engine: str, args: list[str]) -> None:
    assert InferenceServer.model_validate(_server(engine, args)).spec.args == args


def _spellings(flag: str, engine: str) -> st.SearchStrategy[str]:
    """Spellings of `flag` that `engine` reads as `flag`, built without the module's own patterns."""
    if not flag.startswith("--"):
        return st.sampled_from([flag, f"{flag}=1"])
    words = flag[2:].split("-")
    joined = st.lists(st.sampled_from("-_"), min_size=len(words) - 1, max_size=len(words) - 1).map(
        lambda seps: "--" + "".join(w + s for w, s in zip(words, [*seps, ""], strict=True))
    )
    inline = st.sampled_from(["", "=1", "=a=b"])
    spelled = st.tuples(joined, inline).map("".join)
    if engine != "vllm":
        return spelled
    # argparse abbreviations: any non-empty prefix of the long name; dotted keys of the flag.
    prefix = st.integers(min_value=3, max_value=len(flag)).map(lambda n: flag[:n])
    return spelled | prefix | joined.map(lambda name: f"{name}.key")


@st.composite
def _owned_spelling(draw: st.DrawFn) -> tuple[OwnedFlags, str]:
    owned = draw(st.sampled_from(OWNED_FLAGS))
    flag = draw(st.sampled_from(owned.flags))
    return owned, draw(_spellings(flag, owned.engine))


@given(_owned_spelling())
def test_every_spelling_of_every_owned_flag_is_refused(case: tuple[OwnedFlags, str]) -> None:
    owned, arg = case
    errors = owned_flag_errors(owned.engine, ["--seed", arg, "1"])
    assert any(owned.message in error for error in errors), (arg, errors)
    assert owned_flag_errors("generic", [arg]) == []


def test_each_owned_flag_message_names_what_to_use() -> None:
    for owned in OWNED_FLAGS:
        assert owned.message.startswith(f"spec.args must not set {owned.flags[0]}")
        assert "spec." in owned.instead or "the operator sets" in owned.instead, owned
