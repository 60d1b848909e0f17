"""Engine flags the operator owns, refused in spec.args in every spelling the engine reads.

The operator sets these flags from the spec and the placement; both engines keep the last
occurrence of a flag, so a copy in spec.args would silently replace the computed value. This
list is the one place they are named: the CRD's CEL rules (admission), the pydantic validation
(offline plan/render) and the renderer's last check are all derived from it.

Spellings an engine accepts, and so refused here:
- vLLM (Python argparse): `--flag value`, `--flag=value`, underscores for dashes before `=` or
  `.` (`--gpu_memory_utilization`), dotted keys (`--flag.key`), and any prefix of a long or
  short option (argparse abbreviations: `--gpu-memory-util`, `-t` for `-tp`); a one-letter
  option also takes its value attached (`-qfp8`).
- llama.cpp: `--flag value` with underscores for dashes (`--n_gpu_layers`); `--flag=value` is
  refused too (llama.cpp rejects it today; refusing it keeps a later release from reading it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydantic import JsonValue

from vram_operator.api.base import cel_rule

OwningEngine = Literal["vllm", "llamacpp"]


@dataclass(frozen=True)
class OwnedFlags:
    """Flags (canonical spellings) that set one thing the operator decides, and what to use instead."""

    engine: OwningEngine
    flags: tuple[str, ...]
    instead: str

    @property
    def message(self) -> str:
        """The refusal, naming the flags and the spec field that sets the value."""
        return f"spec.args must not set {'/'.join(self.flags)} (in any spelling) for {self.engine}: {self.instead}"

    @property
    def pattern(self) -> str:
        """A regular expression (RE2 and Python alike) matching one argument that sets one of the flags."""
        abbreviations = self.engine == "vllm"
        long_names = [_spelled(f.removeprefix("--"), abbreviations) for f in self.flags if f.startswith("--")]
        short_names = [f.removeprefix("-") for f in self.flags if not f.startswith("--")]
        forms: list[str] = []
        if long_names:
            # vLLM reads `--flag.key value` as a key of a dict-valued flag.
            tail = r"(?:[=.].*)?" if abbreviations else r"(?:=.*)?"
            forms.append(rf"--(?:{'|'.join(long_names)}){tail}")
        for name in short_names:
            if abbreviations and len(name) == 1:
                forms.append(rf"-{re.escape(name)}.*")  # argparse: `-qfp8` is `-q fp8`
            else:
                forms.append(rf"-{_prefixes(name) if abbreviations else re.escape(name)}(?:=.*)?")
        return rf"(?s)^(?:{'|'.join(forms)})$"


def _spelled(name: str, abbreviations: bool) -> str:
    """A long option's name with `_` for any `-`; with abbreviations, any non-empty prefix of it."""
    if abbreviations:
        return _prefixes(name)
    return "[-_]".join(re.escape(part) for part in name.split("-"))


def _prefixes(name: str) -> str:
    """Every non-empty prefix of `name` (`-` read as `-` or `_`): "ab" -> "a(?:b)?"."""
    pattern = ""
    for char in reversed(name):
        piece = "[-_]" if char == "-" else re.escape(char)
        pattern = f"{piece}(?:{pattern})?" if pattern else piece
    return pattern


# vLLM: what render/engine.py sets, plus what changes how much one replica needs.
# maxNumSeqs and maxNumBatchedTokens are owned whether or not the spec sets them: sizing
# counts activation and CUDA-graph memory from them either way.
_KV_SIZED = "use spec.gpuMemoryUtilization (0 = auto); the operator sizes the KV cache from it"
_SERVED = "the operator sets it (its Service and probes use it)"
OWNED_FLAGS: tuple[OwnedFlags, ...] = (
    OwnedFlags("vllm", ("--gpu-memory-utilization",), "use spec.gpuMemoryUtilization (0 = auto)"),
    OwnedFlags("vllm", ("--kv-cache-memory-bytes",), _KV_SIZED),
    OwnedFlags("vllm", ("--num-gpu-blocks-override",), _KV_SIZED),
    OwnedFlags("vllm", ("--tensor-parallel-size", "-tp"), "use spec.tensorParallelSize"),
    OwnedFlags(
        "vllm",
        ("--pipeline-parallel-size", "-pp"),
        "use spec.pipelineParallelSize (a replica takes tensorParallelSize x pipelineParallelSize GPUs)",
    ),
    OwnedFlags("vllm", ("--data-parallel-size", "-dp"), "use spec.replicas"),
    OwnedFlags("vllm", ("--max-model-len",), "use spec.maxModelLen"),
    OwnedFlags("vllm", ("--max-num-seqs",), "use spec.maxNumSeqs"),
    OwnedFlags("vllm", ("--max-num-batched-tokens",), "use spec.maxNumBatchedTokens"),
    OwnedFlags("vllm", ("--kv-cache-dtype",), "use spec.kvCacheDtype"),
    OwnedFlags("vllm", ("--dtype",), "use spec.model.dtype"),
    OwnedFlags("vllm", ("--quantization", "-q"), "use spec.model.quantization"),
    OwnedFlags("vllm", ("--model",), "use spec.model.name or spec.model.path"),
    OwnedFlags("vllm", ("--served-model-name",), "use spec.model.name"),
    OwnedFlags("vllm", ("--port",), _SERVED),
    OwnedFlags("vllm", ("--config",), "give engine flags in spec.args (a config file could set owned flags)"),
    OwnedFlags(
        "llamacpp",
        ("--n-gpu-layers", "--gpu-layers", "-ngl"),
        "the operator offloads what fits its placement (size with spec.maxModelLen and spec.maxNumSeqs)",
    ),
    OwnedFlags("llamacpp", ("--ctx-size", "-c"), "use spec.maxModelLen"),
    OwnedFlags("llamacpp", ("--parallel", "-np"), "use spec.maxNumSeqs"),
    OwnedFlags("llamacpp", ("--cache-type-k", "-ctk"), "use spec.kvCacheDtype"),
    OwnedFlags("llamacpp", ("--cache-type-v", "-ctv"), "use spec.kvCacheDtype"),
    OwnedFlags("llamacpp", ("--model", "-m"), "use spec.model.path"),
    OwnedFlags("llamacpp", ("--hf-repo", "-hf", "-hfr"), "use spec.model.name (with spec.model.quantization)"),
    OwnedFlags("llamacpp", ("--host",), _SERVED),
    OwnedFlags("llamacpp", ("--port",), _SERVED),
)


@cache
def _compiled(owned: OwnedFlags) -> re.Pattern[str]:
    return re.compile(owned.pattern)


def owned_flag_errors(engine: str, args: Sequence[str]) -> list[str]:
    """One message per argument of `args` that sets a flag the operator owns for `engine`."""
    return [
        f"{arg!r}: {owned.message}"
        for arg in args
        for owned in OWNED_FLAGS
        if owned.engine == engine and _compiled(owned).fullmatch(arg)
    ]


def owned_flag_cel_rules() -> list[dict[str, JsonValue]]:
    """The CEL rules (on InferenceServer.spec) refusing every owned flag, one per group."""
    return [
        cel_rule(
            f"self.engine != '{owned.engine}' || !has(self.args)"
            f" || !self.args.exists(a, a.matches(r'{owned.pattern}'))",
            owned.message,
        )
        for owned in OWNED_FLAGS
    ]
