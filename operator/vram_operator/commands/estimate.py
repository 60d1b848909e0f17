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
from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.llamacpp import fit_llamacpp
from vram_operator.sizing.server import size_server, vllm_settings
from vram_operator.sizing.vllm_remedies import Remedies, VllmShape, remedies
from vram_operator.sizing.weights import resolve_weights

CONFIG_NAME = "config.json"
# The spec fields the flags fill in, so that bad input names the flag the user typed.
FLAG_OF_FIELD = {
    "gpuMemoryUtilization": "--utilization",
    "maxModelLen": "--max-model-len",
    "maxNumSeqs": "--max-num-seqs",
    "maxNumBatchedTokens": "--max-num-batched-tokens",
    "tensorParallelSize": "--tp",
    "pipelineParallelSize": "--pp",
    "kvCacheDtype": "--kv-cache-dtype",
    "engineVersion": "--engine-version",
    "vramBudget": "--vram-budget",
    "model.quantization": "--quantization",
    "model.dtype": "--dtype",
    "model.weightsMiB": "--weights-mib",
    "model.name": "--model",
}
# Quantizations a too-large model may be suggested in, largest first (8-bit, then 4-bit weights).
QUANTIZATIONS_TO_TRY = ("fp8", "awq")


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
    add("--pp", type=int, default=1, metavar="P", help="pipeline-parallel size (vLLM; TP x PP GPUs on one node)")
    add("--max-num-seqs", type=int, metavar="S")
    add("--max-num-batched-tokens", type=int, metavar="B")
    add("--kv-cache-dtype", default="auto", metavar="D")
    add("--dtype", default="auto", metavar="D")
    add("--quantization", metavar="Q")
    add("--weights-mib", type=float, metavar="W", help="weights size, overriding every estimate")
    add(
        "--engine-version",
        metavar="V",
        help="engine version, e.g. 0.19.0, v0.12, 0.11.0+cu118 (vLLM memory model by version; newer than 0.33: 0.33)",
    )
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
        "pipelineParallelSize": args.pp,
        "kvCacheDtype": args.kv_cache_dtype,
        "engineVersion": args.engine_version,
        "gpuMemoryUtilization": args.utilization or 0.0,
        "vramBudget": args.vram_budget,
    }
    try:
        return InferenceServerSpec.model_validate({k: v for k, v in document.items() if v is not None})
    except ValidationError as error:
        location = ".".join(str(part) for part in error.errors()[0]["loc"])
        message = describe_validation_error(error).removeprefix(f"{location}: ")
        raise InputError(message, field=FLAG_OF_FIELD.get(location, location)) from None


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
        field = FLAG_OF_FIELD.get(error.field or "", error.field)
        raise InputError(str(error), source=config_file, field=field) from None
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
        shape = VllmShape(
            arch,
            weights.total_bytes,
            vllm_settings(spec),
            total,
            args.gpu_name,
            weights.source,
            args.pp,
            weights.quantization,
            exact_weights=args.weights_mib is not None,
        )
        profile = shape.profile()
        warnings = [*weights.warnings, *vllm.version_warnings(args.engine_version)]
        minimum = vllm.min_utilization(profile, total)
        # The most vLLM could be given here: the whole GPU, or what is free of it, less its CUDA graphs
        # where they are captured beyond the utilization share.
        room = total if args.gpu_free_mib is None else args.gpu_free_mib
        ceiling = min(1.0, vllm.utilization_within(profile, total, room))
        if args.utilization is None and minimum > 1.0:
            result = _no_utilization_fits(profile, minimum)
        else:
            utilization = args.utilization or vllm.recommended_utilization(profile, total, args.gpu_free_mib)
            fit = vllm.fit(profile, total, utilization, args.gpu_free_mib)
            result = {
                **fit.to_contract(),
                "utilization": utilization,
                "reservedMiB": round(vllm.footprint_mib(profile, total, utilization), 1),
                "message": fit.message,
            }
        result["requiredMiBPerGpu"] = round(shape.required_mib(), 1)
        if minimum > ceiling:
            limit = min(vllm.DEFAULT_UTILIZATION, ceiling)
            found = remedies(shape, limit, _quantized_weights(args, directory, arch, weights.quantization))
            where = f"one {total:.0f} MiB GPU"
            if args.gpu_free_mib is not None:
                where = f"the {args.gpu_free_mib:.0f} MiB free of {where}"
            result |= _remedy_keys(found, where, engine_message=str(result["message"]))
        return {**result, "warnings": warnings}
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


def _no_utilization_fits(profile: vllm.VllmProfile, minimum: float) -> dict[str, Any]:
    """The contract keys for a model that needs more than the whole GPU: no utilization to recommend."""
    return {
        "weightsMiB": round(profile.weights_mib, 1),
        "activationMiB": round(profile.activation_mib, 1),
        "nonTorchMiB": round(profile.non_torch_mib, 1),
        "cudaGraphMiB": round(profile.cuda_graph_mib, 1),
        "kvCacheMiB": 0.0,
        "kvCacheTokens": 0,
        "kvBytesPerToken": profile.kv_bytes_per_token,
        "maxConcurrency": 0.0,
        "minUtilization": minimum,
        "recommendedUtilization": None,
        "fits": False,
        "reason": "InsufficientMemory",
        "source": profile.source,
        "utilization": None,
        "reservedMiB": None,
        "message": "",
    }


def _remedy_keys(found: Remedies, where: str, *, engine_message: str) -> dict[str, Any]:
    """Where the model does not fit this GPU: what it needs per GPU and what would make it fit."""
    need = (
        f"does not fit {where}: needs {found.required_mib_per_gpu:.0f} MiB per GPU "
        f"for one {found.max_model_len_now}-token request; {'; '.join(found.lines())}"
    )
    return {
        "message": f"{need}. {engine_message}" if engine_message else need,
        "suggestions": list(found.lines()),
        "minTensorParallelSize": found.tensor_parallel_size,
        "maxFittingModelLen": found.max_model_len,
        "fittingQuantization": found.quantization,
    }


def _quantized_weights(
    args: argparse.Namespace, directory: Path | None, arch: ModelArchitecture, current: str | None
) -> dict[str, int]:
    """Weights of all ranks in the quantizations smaller than the current one, largest first."""
    if current is not None and current not in QUANTIZATIONS_TO_TRY:
        return {}  # already in a format of its own: no smaller one to suggest
    smaller = QUANTIZATIONS_TO_TRY[QUANTIZATIONS_TO_TRY.index(current) + 1 if current else 0 :]
    return {
        name: resolve_weights(
            path=directory, architecture=arch, model_name=args.model, dtype=args.dtype, quantization=name
        ).total_bytes
        for name in smaller
    }


def _print_table(result: dict[str, Any]) -> None:
    table = Table(title="Estimate (per GPU)", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key, value in result.items():
        text = "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
        table.add_row(key, "-" if value is None or text == "" else text)
    console().print(table)
