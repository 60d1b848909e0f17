"""Reading an engine's command line and environment as the engine itself does (pure).

vLLM (argparse): `--flag value` and `--flag=value`, dashes or underscores (`--gpu_memory_utilization`),
the last occurrence wins, human-readable integers for `--max-model-len` (`32k` = 32000, `32K` =
32768). llama-server: short and long names (`-c`/`--ctx-size`, `-np`/`--parallel`,
`-ngl`/`--gpu-layers`/`--n-gpu-layers`), the `LLAMA_ARG_*` environment variables, and the command
line winning over the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class EngineArgError(ValueError):
    """The engine refuses its command line (it exits with this message before touching a GPU)."""


def _normalize(flag: str, *, underscores: bool) -> str:
    if not flag.startswith("--") or not underscores:
        return flag
    return "--" + flag[2:].replace("_", "-")


def flag_values(args: Sequence[str], names: frozenset[str], *, underscores: bool = False) -> list[str | None]:
    """Every value given to one of `names`, in order; None for a flag given without a value."""
    found: list[str | None] = []
    for position, raw in enumerate(args):
        flag, equals, inline = raw.partition("=")
        if _normalize(flag, underscores=underscores) not in names:
            continue
        if equals:
            found.append(inline)
            continue
        following = args[position + 1] if position + 1 < len(args) else None
        takes = following is not None and not (following.startswith("-") and not _is_number(following))
        found.append(following if takes else None)
    return found


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+(\.[0-9]*)?", text) is not None


def last_value(args: Sequence[str], names: frozenset[str], *, underscores: bool = False) -> str | None:
    values = flag_values(args, names, underscores=underscores)
    return values[-1] if values else None


def has_flag(args: Sequence[str], names: frozenset[str], *, underscores: bool = False) -> bool:
    return any(_normalize(raw.partition("=")[0], underscores=underscores) in names for raw in args)


# --- vLLM ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmArgs:
    """The vLLM engine arguments that change its memory; None = vLLM's default."""

    gpu_memory_utilization: float = 0.9  # vLLM's own default
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    dtype: str = "auto"
    enforce_eager: bool = False
    allow_long_max_model_len: bool = False


_HUMAN = re.compile(r"(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>[kKmMgGtT]?)")
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def human_readable_int(flag: str, text: str) -> int:
    """vLLM's integer spelling for lengths: 32k = 32000, 32K = 32768, 1.5k = 1500."""
    match = _HUMAN.fullmatch(text.strip())
    if match is None:
        raise EngineArgError(f"argument {flag}: invalid human_readable_int value: {text!r}")
    suffix = match.group("suffix")
    factor = _BINARY.get(suffix) or _DECIMAL[suffix]
    value = float(match.group("number")) * factor
    if value != int(value):
        raise EngineArgError(f"argument {flag}: invalid human_readable_int value: {text!r}")
    return int(value)


def _int(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise EngineArgError(f"argument {flag}: invalid int value: {text!r}") from None


def _vllm(args: Sequence[str], *names: str) -> str | None:
    return last_value(args, frozenset(names), underscores=True)


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true")


def read_vllm(args: Sequence[str], env: Mapping[str, str]) -> VllmArgs:
    """vLLM's memory arguments from its command line; EngineArgError as argparse would refuse them."""
    utilization_text = _vllm(args, "--gpu-memory-utilization")
    utilization = 0.9
    if utilization_text is not None:
        try:
            utilization = float(utilization_text)
        except ValueError:
            raise EngineArgError(
                f"argument --gpu-memory-utilization: invalid float value: {utilization_text!r}"
            ) from None
    length = _vllm(args, "--max-model-len")
    tp = _int("--tensor-parallel-size", _vllm(args, "--tensor-parallel-size", "-tp")) or 1
    return VllmArgs(
        gpu_memory_utilization=utilization,
        max_model_len=None if length in (None, "-1", "auto") else human_readable_int("--max-model-len", length),
        max_num_seqs=_int("--max-num-seqs", _vllm(args, "--max-num-seqs")),
        max_num_batched_tokens=_int("--max-num-batched-tokens", _vllm(args, "--max-num-batched-tokens")),
        tensor_parallel_size=tp,
        kv_cache_dtype=_vllm(args, "--kv-cache-dtype") or "auto",
        dtype=_vllm(args, "--dtype") or "auto",
        enforce_eager=has_flag(args, frozenset({"--enforce-eager"}), underscores=True),
        allow_long_max_model_len=_truthy(env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN")),
    )


# --- llama.cpp -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaCppArgs:
    """llama-server's memory arguments; None = its default."""

    model: str | None = None
    ctx_size: int | None = None
    parallel: int | None = None
    n_gpu_layers: int | None = None
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"


# Command-line names and the environment variable llama-server reads for the same option.
_LLAMA_OPTIONS: dict[str, tuple[frozenset[str], str]] = {
    "model": (frozenset({"-m", "--model", "-hf", "--hf-repo", "-hfr"}), "LLAMA_ARG_MODEL"),
    "ctx_size": (frozenset({"-c", "--ctx-size"}), "LLAMA_ARG_CTX_SIZE"),
    "parallel": (frozenset({"-np", "--parallel"}), "LLAMA_ARG_N_PARALLEL"),
    "n_gpu_layers": (frozenset({"-ngl", "--gpu-layers", "--n-gpu-layers"}), "LLAMA_ARG_N_GPU_LAYERS"),
    "cache_type_k": (frozenset({"-ctk", "--cache-type-k"}), "LLAMA_ARG_CACHE_TYPE_K"),
    "cache_type_v": (frozenset({"-ctv", "--cache-type-v"}), "LLAMA_ARG_CACHE_TYPE_V"),
}


def _llama(args: Sequence[str], env: Mapping[str, str], option: str) -> str | None:
    names, variable = _LLAMA_OPTIONS[option]
    given = last_value(args, names)
    return given if given is not None else env.get(variable)


def _llama_int(args: Sequence[str], env: Mapping[str, str], option: str) -> int | None:
    text = _llama(args, env, option)
    if text is None:
        return None
    if text in ("all", "auto") and option == "n_gpu_layers":
        return None
    try:
        return int(text)
    except ValueError:
        raise EngineArgError(f'error while handling argument "{option}": stoi: {text!r}') from None


def read_llamacpp(args: Sequence[str], env: Mapping[str, str]) -> LlamaCppArgs:
    """llama-server's memory arguments from its command line and LLAMA_ARG_* environment."""
    return LlamaCppArgs(
        model=_llama(args, env, "model"),
        ctx_size=_llama_int(args, env, "ctx_size"),
        parallel=_llama_int(args, env, "parallel"),
        n_gpu_layers=_llama_int(args, env, "n_gpu_layers"),
        cache_type_k=_llama(args, env, "cache_type_k") or "f16",
        cache_type_v=_llama(args, env, "cache_type_v") or "f16",
    )


# --- generic -------------------------------------------------------------------------------------


def read_generic_budget_mib(env: Mapping[str, str]) -> float | None:
    """The budget a generic service reads: VRAM_BUDGET_MIB, else VRAM_BUDGET_GB (GiB)."""
    mib, gib = env.get("VRAM_BUDGET_MIB"), env.get("VRAM_BUDGET_GB")
    try:
        if mib is not None:
            return float(mib)
        if gib is not None:
            return float(gib) * 1024.0
    except ValueError:
        return None
    return None
