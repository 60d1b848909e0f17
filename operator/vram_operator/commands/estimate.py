"""`vram-operator estimate`: what one model needs on one GPU, and what its engine would do there."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.commands.output import console, print_json
from vram_operator.errors import InputError
from vram_operator.manifests import describe_validation_error
from vram_operator.sizing import vllm
from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.llamacpp import fit_llamacpp
from vram_operator.sizing.server import size_server, vllm_settings
from vram_operator.sizing.weights import resolve_weights

CONFIG_NAME = "config.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", metavar="FILE|DIR", help="config.json, or a model directory (config.json + *.safetensors)")
    add("--model", metavar="NAME", help="model name (Hugging Face id): catalog or parameter count from the name")
    add("--engine", choices=("vllm", "llamacpp", "generic"), default="vllm")
    add("--gpu-memory-mib", type=float, required=True, metavar="N", help="GPU memory as the driver reports it")
    add("--gpu-free-mib", type=float, metavar="F", help="free memory at start (vLLM's start-up check)")
    add("--gpu-name", default="", metavar="NAME", help="GPU product name (vLLM's defaults depend on it)")
    add("--utilization", type=float, metavar="U", help="vLLM --gpu-memory-utilization to evaluate")
    add("--max-model-len", type=int, metavar="L")
    add("--tp", type=int, default=1, metavar="T", help="tensor-parallel size")
    add("--max-num-seqs", type=int, metavar="S")
    add("--max-num-batched-tokens", type=int, metavar="B")
    add("--kv-cache-dtype", default="auto", metavar="D")
    add("--dtype", default="auto", metavar="D")
    add("--quantization", metavar="Q")
    add("--weights-mib", type=float, metavar="W", help="weights size, overriding every estimate")
    add("--engine-version", metavar="V", help="engine version (vLLM memory model by version)")
    add("--vram-budget", metavar="Q", help="generic engines: the whole footprint (e.g. 650Mi)")
    add("-o", "--output", choices=("table", "json"), default="table")


def _read_config(raw: str | None) -> tuple[dict[str, Any] | None, Path | None, str | None]:
    """(config.json, model directory for safetensors headers, the config file's name)."""
    if raw is None:
        return None, None, None
    path = Path(raw)
    directory = path if path.is_dir() else None
    file = path / CONFIG_NAME if directory is not None else path
    if not file.is_file():
        raise InputError("no such file", source=str(file), field="--config")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", source=str(file)) from None
    if not isinstance(config, dict):
        raise InputError("expected a JSON object", source=str(file))
    return config, directory, str(file)


def _spec(args: argparse.Namespace) -> InferenceServerSpec:
    model: dict[str, Any] = {"name": args.model, "dtype": args.dtype}
    if args.quantization:
        model["quantization"] = args.quantization
    if args.weights_mib is not None:
        model["weightsMiB"] = max(1, round(args.weights_mib))
    document: dict[str, Any] = {
        "engine": args.engine,
        "image": "estimate",
        "model": model,
        "maxModelLen": args.max_model_len,
        "maxNumSeqs": args.max_num_seqs,
        "maxNumBatchedTokens": args.max_num_batched_tokens,
        "tensorParallelSize": args.tp,
        "kvCacheDtype": args.kv_cache_dtype,
        "engineVersion": args.engine_version,
        "gpuMemoryUtilization": args.utilization or 0.0,
        "vramBudget": args.vram_budget,
    }
    try:
        return InferenceServerSpec.model_validate({k: v for k, v in document.items() if v is not None})
    except ValidationError as error:
        raise InputError(describe_validation_error(error)) from None


def run(args: argparse.Namespace) -> int:
    if not args.gpu_memory_mib > 0:
        raise InputError("must be positive", field="--gpu-memory-mib")
    if args.gpu_free_mib is not None and not 0 <= args.gpu_free_mib <= args.gpu_memory_mib:
        raise InputError("must be between 0 and --gpu-memory-mib", field="--gpu-free-mib")
    config, directory, config_file = _read_config(args.config)
    spec = _spec(args)
    try:
        result = _estimate(args, spec, config, directory)
    except SizingError as error:
        raise InputError(str(error), source=config_file, field=error.field) from None
    if args.output == "json":
        print_json(result)
    else:
        _print_table(result)
    return 0


def _estimate(
    args: argparse.Namespace, spec: InferenceServerSpec, config: dict[str, Any] | None, directory: Path | None
) -> dict[str, Any]:
    total = args.gpu_memory_mib
    if spec.engine == "vllm":
        arch = from_config(config) if config is not None else None
        weights = resolve_weights(
            weights_mib=args.weights_mib,
            path=directory,
            architecture=arch,
            model_name=args.model,
            dtype=args.dtype,
            quantization=args.quantization,
        )
        arch = arch or weights.architecture
        if arch is None:
            raise SizingError("the KV cache depends on the architecture: give --config", field="--config")
        per_rank = vllm.weights_per_rank(weights.total_bytes, arch, args.tp)
        profile = vllm.profile(
            arch, per_rank, vllm_settings(spec), total, gpu_name=args.gpu_name, source=weights.source
        )
        utilization = args.utilization or vllm.recommended_utilization(profile, total, args.gpu_free_mib)
        fit = vllm.fit(profile, total, utilization, args.gpu_free_mib)
        return {
            **fit.to_contract(),
            "utilization": utilization,
            "message": fit.message,
            "warnings": list(weights.warnings),
        }
    sizing = size_server(spec, config, gpu_total_mib=total)
    budget = min(total if args.gpu_free_mib is None else args.gpu_free_mib, total)
    if spec.engine == "llamacpp" and sizing.llamacpp_model is not None:
        fit_ll = fit_llamacpp(sizing.llamacpp_model, budget, sizing.llamacpp_settings)
        est = fit_ll.estimate
        return {
            "weightsMiB": round(est.weights_mib, 1),
            "activationMiB": round(est.compute_mib, 1),
            "nonTorchMiB": round(est.overhead_mib, 1),
            "cudaGraphMiB": 0.0,
            "kvCacheMiB": round(est.kv_cache_mib, 1),
            "kvCacheTokens": est.kv_cells,
            "kvBytesPerToken": est.kv_bytes_per_token,
            "maxConcurrency": float(sizing.llamacpp_settings.parallel if sizing.llamacpp_settings else 1),
            "minUtilization": None,
            "recommendedUtilization": None,
            "fits": fit_ll.fits,
            "reason": "Fits" if fit_ll.fits else "InsufficientMemory",
            "source": sizing.source,
            "message": fit_ll.reason,
            "args": list(fit_ll.args),
            "totalMiB": round(est.total_mib, 1),
            "warnings": [*sizing.warnings, *fit_ll.warnings],
        }
    fits = sizing.preferred_mib <= budget
    return {
        "weightsMiB": round(sizing.weights.total_mib, 1) if sizing.weights else 0.0,
        "activationMiB": 0.0,
        "nonTorchMiB": 0.0,
        "cudaGraphMiB": 0.0,
        "kvCacheMiB": 0.0,
        "kvCacheTokens": 0,
        "kvBytesPerToken": 0,
        "maxConcurrency": 0.0,
        "minUtilization": None,
        "recommendedUtilization": None,
        "fits": fits,
        "reason": "Fits" if fits else "InsufficientMemory",
        "source": sizing.source,
        "message": "; ".join(sizing.reasons),
        "totalMiB": round(sizing.preferred_mib, 1),
        "warnings": list(sizing.warnings),
    }


def _print_table(result: dict[str, Any]) -> None:
    table = Table(title="Estimate (per GPU)", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key, value in result.items():
        text = "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
        table.add_row(key, "-" if value is None or text == "" else text)
    console().print(table)
