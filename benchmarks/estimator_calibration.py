"""Compare the vLLM memory model with real vLLM start-up logs, out of sample.

Reads the start-up rows in tests/fixtures (vllm-startup-calibration.csv and vllm-startup-logs.csv;
rows whose model config is in tests/fixtures/model-configs, one pipeline stage), runs config ->
architecture -> weights -> profile -> fit for each, and prints, per vLLM version, the error of the
weights, the activation peak, the non-torch memory, the KV pool and the CUDA graphs (where the log
says what capturing them took, after the KV cache).

The constants the code cannot give (sampler bytes per logit, non-torch MiB, CUDA-graph MiB per size
and per piece; `ProfileConstants` in sizing/vllm.py) are refitted for every row from the rows of the
other models in its version range (the graph constants by least squares over the dense models' logs)
(leave one model out; the logs repeat some models many times, so leaving one row out would keep
its twins in the fit): a row is predicted by constants that never saw its model. A row with no
other model in its range has no out-of-sample prediction for that constant (shown as "-").

    python benchmarks/estimator_calibration.py            # per-row table and per-version summary
    python benchmarks/estimator_calibration.py --in-sample  # with the shipped constants instead
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.vllm import (
    FULL_CUDAGRAPHS_SINCE,
    GIB,
    HEAVY_SAMPLER_SINCE,
    LARGE_GPU_MIB,
    LIGHTER_SAMPLER_SINCE,
    MIB,
    NON_TORCH_GROWS_SINCE,
    V1_ENGINE_SINCE,
    EngineVersion,
    ProfileConstants,
    VllmFit,
    VllmProfile,
    VllmSettings,
    cuda_graph_capture_sizes,
    fit,
    moe_workspace_bytes,
    profile,
    profile_constants,
    weights_per_rank,
)

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
CALIBRATION_CSV = FIXTURES / "vllm-startup-calibration.csv"
LOGS_CSV = FIXTURES / "vllm-startup-logs.csv"
MODEL_CONFIGS = FIXTURES / "model-configs"
QUANTITIES = ("weights", "activation", "non-torch", "KV pool", "CUDA graphs")
# Rows whose weights miss by more (vision towers, MXFP4, ...) measure the weights model, not the
# profile run: the second summary leaves them out.
WEIGHTS_IN_SCOPE_PERCENT = 2.0


@dataclass(frozen=True)
class RowResult:
    row: dict[str, str]
    profile: VllmProfile
    fit: VllmFit
    # The activation vLLM would log without the sampler warm-up (the forward pass alone).
    forward_gib: float

    @property
    def failed(self) -> bool:
        return self.row["notes"].startswith("FAILED")

    @property
    def failed_for_kv(self) -> bool:
        return self.failed and "No available memory for the cache blocks" in self.row["notes"] + self.row.get(
            "failure", ""
        )

    @property
    def logged_tokens(self) -> int | None:
        value = self.row["kv_cache_tokens"]
        return int(value) if value else None

    def logged(self, quantity: str) -> float | None:
        """The log's figure (GiB); the KV pool only for a start-up that sized one."""
        key = {"weights": "weights_gib", "activation": "activation_peak_gib", "non-torch": "non_torch_gib"}
        if quantity == "KV pool":
            value = self.row["kv_cache_gib"]
            return float(value) if value and float(value) > 0 else None
        if quantity == "CUDA graphs":
            # "Graph capturing finished in N secs, took M GiB", where captured after the KV cache.
            value = self.row.get("cuda_graph_gib", "")
            captured_after = self.row.get("cuda_graph_subtracted") == "no"
            return float(value) if captured_after and value and float(value) > 0 else None
        value = self.row[key[quantity]]
        return float(value) if value else None

    def predicted(self, quantity: str) -> float:
        return {
            "weights": self.profile.weights_mib,
            "activation": self.profile.activation_mib,
            "non-torch": self.profile.non_torch_mib,
            "KV pool": self.fit.kv_cache_mib,
            "CUDA graphs": self.profile.cuda_graph_mib,
        }[quantity] / 1024

    def error(self, quantity: str) -> float | None:
        """Relative error in percent, or None where the log has no such figure."""
        logged = self.logged(quantity)
        if logged is None or logged == 0:
            return None
        return 100.0 * (self.predicted(quantity) - logged) / logged


def read_rows(path: Path = CALIBRATION_CSV) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _model_id(row: dict[str, str]) -> str:
    return row["model"].split(maxsplit=1)[0]


def _config_path(row: dict[str, str]) -> Path:
    return MODEL_CONFIGS / f"{_model_id(row).replace('/', '__')}.json"


def _row_key(row: dict[str, str]) -> tuple[str, ...]:
    fields = ("model", "vllm_version", "tp", "kv_cache_dtype", "max_model_len", "quantization", "dtype")
    return (*(row[field] for field in fields), row["kv_cache_tokens"], row["kv_cache_gib"], row["weights_gib"])


def evaluation_rows() -> list[dict[str, str]]:
    """Rows of both fixtures that this model can evaluate: a known config, one pipeline stage, no duplicates."""
    rows, seen = [], set()
    for row in [*read_rows(CALIBRATION_CSV), *read_rows(LOGS_CSV)]:
        if not _config_path(row).is_file() or row.get("pipeline_parallel", "1") not in ("", "1"):
            continue
        if not row["weights_gib"] or row["notes"].startswith("FAILED: CUDA OOM during weight"):
            continue
        if not row["gpu_memory_utilization"] or gpu_total_mib(row) is None:
            continue
        if _row_key(row) in seen:
            continue
        seen.add(_row_key(row))
        rows.append(row)
    return rows


# What CUDA (torch.cuda.mem_get_info) reports as total on the GPUs of rows that do not log it: the
# H100 figure from the logs that do, the A100 ones from PyTorch's "total capacity" messages.
CUDA_TOTAL_GIB = {"H100-80GB": 79.19, "A100-80GB": 79.15, "A100-40GB": 39.39}


def gpu_total_mib(row: dict[str, str]) -> float | None:
    """The total CUDA reported to vLLM: logged, the logged budget over the utilization, or the product's."""
    if row["gpu_total_gib"]:
        return float(row["gpu_total_gib"]) * 1024
    requested = row.get("requested_gib", "")
    if requested and row["gpu_memory_utilization"]:
        return float(requested) * 1024 / float(row["gpu_memory_utilization"])
    known = CUDA_TOTAL_GIB.get(row["gpu"])
    return known * 1024 if known is not None else None


def _architecture(row: dict[str, str]) -> ModelArchitecture:
    config: dict[str, object] = json.loads(_config_path(row).read_text())
    return from_config(config)


def _quantization(text: str) -> str | None:
    """The CSV describes quantization in words ("awq/gptq 4-bit (inferred ...)", "mxfp4 (model default)")."""
    word = text.split("/", maxsplit=1)[0].split(maxsplit=1)[0].lower() if text else "none"
    return None if word == "none" else word


def _dtype(row: dict[str, str]) -> str:
    return row["dtype"] or "auto"


def estimate_row(row: dict[str, str], constants: ProfileConstants | None = None) -> RowResult:
    arch = _architecture(row)
    tp = int(row["tp"])
    total = weights_bytes_for_architecture(arch, _dtype(row), _quantization(row["quantization"]))
    batched = row.get("max_num_batched_tokens", "")
    settings = VllmSettings(
        engine_version=row["vllm_version"],
        max_model_len=int(row["max_model_len"]),
        max_num_seqs=int(row["max_num_seqs"]) if row["max_num_seqs"] else None,
        max_num_batched_tokens=int(batched) if batched else None,
        tensor_parallel_size=tp,
        kv_cache_dtype=row["kv_cache_dtype"] or "auto",
        block_size=int(row["block_size"]) if row["block_size"] else 16,
        dtype=_dtype(row),
        allow_long_max_model_len=True,
    )
    total_mib = gpu_total_mib(row)
    assert total_mib is not None  # evaluation_rows() keeps only rows that have it
    per_rank = weights_per_rank(total, arch, tp)
    prof = profile(arch, per_rank, settings, total_mib, gpu_name=row["gpu"], constants=constants)
    known = constants or profile_constants(EngineVersion.parse(row["vllm_version"]), arch)
    forward = profile(
        arch,
        per_rank,
        settings,
        total_mib,
        gpu_name=row["gpu"],
        constants=replace(known, sampler_bytes_per_logit=0),
    )
    result = fit(prof, total_mib, float(row["gpu_memory_utilization"]))
    return RowResult(row=row, profile=prof, fit=result, forward_gib=forward.activation_mib / 1024)


# --- leave one out ---------------------------------------------------------------------------


def sampler_group(row: dict[str, str]) -> str:
    """Rows sharing one sampler-bytes-per-logit constant (one range of versions; V0 shares 0.11-0.16's)."""
    version = EngineVersion.parse(row["vllm_version"])
    if V1_ENGINE_SINCE <= version < HEAVY_SAMPLER_SINCE:
        return "0.8-0.10"
    return "V0, 0.11-0.16" if version < LIGHTER_SAMPLER_SINCE else "0.17+"


def non_torch_group(row: dict[str, str]) -> tuple[str, str]:
    """Rows sharing one non-torch constant: range of versions x TP 1 (by GPU class) / TP > 1."""
    version = EngineVersion.parse(row["vllm_version"])
    era = "v0" if version < V1_ENGINE_SINCE else ("v1-early" if version < NON_TORCH_GROWS_SINCE else "v1-late")
    if int(row["tp"]) > 1:
        return era, "tp>1"
    large = (gpu_total_mib(row) or 0.0) >= LARGE_GPU_MIB
    return era, "tp1" if large else "tp1-small-gpu"


def implied_activation_gib(result: RowResult) -> float | None:
    """The logged activation; where the log has none, what its budget, weights and KV pool leave for it."""
    logged = result.logged("activation")
    if logged is not None:
        return logged
    kv, weights = result.logged("KV pool"), result.logged("weights")
    if kv is None or weights is None or result.failed:
        return None
    prof = result.profile
    graphs = prof.cuda_graph_mib if prof.cuda_graph_subtracted else 0.0
    requested = result.fit.utilization * (gpu_total_mib(result.row) or 0.0)
    return (requested - prof.non_torch_mib - graphs) / 1024 - weights - kv


def implied_sampler_bytes(result: RowResult) -> float | None:
    """Bytes per logit the activation implies, where the sampler (not the forward pass) set it."""
    activation = implied_activation_gib(result)
    if activation is None or activation <= 1.1 * result.forward_gib:
        return None
    prof = result.profile
    arch = _architecture(result.row)
    logits = min(prof.max_num_batched_tokens, prof.max_num_seqs) * arch.vocab_size
    hidden = prof.max_num_batched_tokens * arch.hidden_size * 2
    version = EngineVersion.parse(result.row["vllm_version"])
    workspace = moe_workspace_bytes(arch, version, prof.tensor_parallel_size, prof.max_num_batched_tokens, 2)
    return (activation * GIB - hidden - workspace) / logits


def _median_of_others(
    results: list[RowResult],
    index: int,
    group: Callable[[dict[str, str]], object],
    value: Callable[[RowResult], float | None],
) -> float | None:
    own = group(results[index].row)
    others = [
        found
        for position, other in enumerate(results)
        if _model_id(other.row) != _model_id(results[index].row)
        and group(other.row) == own
        and (found := value(other)) is not None
    ]
    return statistics.median(others) if others else None


@dataclass(frozen=True)
class OutOfSample:
    """A row predicted by constants fitted on the other rows; None where no other row fits a constant."""

    result: RowResult
    sampler_fitted: bool
    non_torch_fitted: bool
    graphs_fitted: bool = True

    def error(self, quantity: str) -> float | None:
        if quantity == "non-torch" and not self.non_torch_fitted:
            return None
        if quantity == "CUDA graphs" and not self.graphs_fitted:
            return None
        if quantity in ("activation", "KV pool") and not self.sampler_fitted:
            return None
        if quantity == "KV pool" and not self.non_torch_fitted:
            return None
        return self.result.error(quantity)


def graph_terms(result: RowResult) -> tuple[float, float]:
    """The row's CUDA graphs as (full graphs, piecewise pieces) over its capture sizes: the graphs are
    a x the first + b x the second (no full graphs before 0.11)."""
    prof = result.profile
    version = EngineVersion.parse(result.row["vllm_version"])
    sizes = cuda_graph_capture_sizes(version, prof.max_num_seqs)
    pieces = _architecture(result.row).num_layers + (1 if prof.is_v1 else 0)
    return (sizes if version >= FULL_CUDAGRAPHS_SINCE else 0), sizes * pieces


def fitted_graph_constants(results: list[RowResult], index: int) -> tuple[float, float] | None:
    """(MiB per size, MiB per piece and size) by least squares on the other dense models' logged graphs."""
    own = _model_id(results[index].row)
    points = [
        (*graph_terms(other), logged * 1024)
        for other in results
        if _model_id(other.row) != own
        and not _architecture(other.row).is_moe
        and (logged := other.logged("CUDA graphs")) is not None
    ]
    if len({_model_id(other.row) for other in results if _model_id(other.row) != own}) < 2 or len(points) < 2:
        return None
    # Normal equations of y = a x1 + b x2.
    s11 = sum(x1 * x1 for x1, _, _ in points)
    s12 = sum(x1 * x2 for x1, x2, _ in points)
    s22 = sum(x2 * x2 for _, x2, _ in points)
    t1 = sum(x1 * y for x1, _, y in points)
    t2 = sum(x2 * y for _, x2, y in points)
    determinant = s11 * s22 - s12 * s12
    if determinant == 0:
        return None
    return (t1 * s22 - t2 * s12) / determinant, (s11 * t2 - s12 * t1) / determinant


def leave_one_out(rows: list[dict[str, str]]) -> list[OutOfSample]:
    shipped = [estimate_row(row) for row in rows]
    predictions = []
    for index, result in enumerate(shipped):
        arch = _architecture(result.row)
        constants = profile_constants(EngineVersion.parse(result.row["vllm_version"]), arch)
        sampler = _median_of_others(shipped, index, sampler_group, implied_sampler_bytes)
        non_torch = _median_of_others(shipped, index, non_torch_group, lambda other: other.logged("non-torch"))
        # A row the sampler does not dominate does not depend on the sampler constant.
        sampler_needed = implied_sampler_bytes(result) is not None
        if sampler is not None:
            constants = replace(constants, sampler_bytes_per_logit=sampler)
        if non_torch is not None:
            field = {"tp>1": "non_torch_tp_many_mib", "tp1": "non_torch_tp1_mib"}.get(
                non_torch_group(result.row)[1], "non_torch_tp1_small_gpu_mib"
            )
            constants = replace(constants, **{field: non_torch * 1024})
        graphs = fitted_graph_constants(shipped, index)
        if graphs is not None:
            constants = replace(constants, cuda_graph_mib_per_size=graphs[0], cuda_graph_mib_per_piece=graphs[1])
        predictions.append(
            OutOfSample(
                estimate_row(result.row, constants),
                sampler_fitted=sampler is not None or not sampler_needed,
                non_torch_fitted=non_torch is not None,
                graphs_fitted=graphs is not None,
            )
        )
    return predictions


# --- report ----------------------------------------------------------------------------------


def summary(predictions: Iterable[OutOfSample]) -> dict[str, dict[str, tuple[int, float, float]]]:
    """version -> quantity -> (rows, mean |error| %, max |error| %)."""
    errors: dict[str, dict[str, list[float]]] = {}
    for prediction in predictions:
        version = str(EngineVersion.parse(prediction.result.row["vllm_version"]))
        for quantity in QUANTITIES:
            error = prediction.error(quantity)
            if error is not None:
                errors.setdefault(version, {}).setdefault(quantity, []).append(abs(error))
    return {
        version: {q: (len(v), sum(v) / len(v), max(v)) for q, v in by_quantity.items()}
        for version, by_quantity in sorted(errors.items(), key=lambda item: EngineVersion.parse(item[0]))
    }


def _cell(error: float | None) -> str:
    return "-" if error is None else f"{error:+.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-sample", action="store_true", help="use the shipped constants (no refit)")
    args = parser.parse_args()
    rows = evaluation_rows()
    if args.in_sample:
        predictions = [OutOfSample(estimate_row(row), True, True) for row in rows]
    else:
        predictions = leave_one_out(rows)
    header = (
        f"{'model':36} {'ver':7} {'tp':>2} {'weights%':>9} {'activ%':>7} {'nontorch%':>9} {'KVpool%':>8} "
        f"{'graphs%':>8}  outcome"
    )
    print(header)
    print("-" * len(header))
    for prediction in predictions:
        result, row = prediction.result, prediction.result.row
        cells = " ".join(f"{_cell(prediction.error(q)):>{w}}" for q, w in zip(QUANTITIES, (9, 7, 9, 8, 8), strict=True))
        outcome = result.fit.reason + (" (log: failed)" if result.failed else "")
        print(f"{_model_id(row)[:36]:36} {row['vllm_version'][:7]:7} {row['tp']:>2} {cells}  {outcome}")
    print()
    mode = "in sample" if args.in_sample else "leave one model out"
    print(f"per version, {mode}: rows / mean |error| % / max |error| %")
    for version, by_quantity in summary(predictions).items():
        parts = [f"{q} {n}/{mean:.1f}/{worst:.1f}" for q, (n, mean, worst) in by_quantity.items()]
        print(f"  {version:8} " + "   ".join(parts))
    weights_ok = [p for p in predictions if abs(p.result.error("weights") or 0.0) <= WEIGHTS_IN_SCOPE_PERCENT]
    print(f"the same, rows whose weights are within {WEIGHTS_IN_SCOPE_PERCENT:g}% of the log ({len(weights_ok)} rows):")
    for version, by_quantity in summary(weights_ok).items():
        parts = [f"{q} {n}/{mean:.1f}/{worst:.1f}" for q, (n, mean, worst) in by_quantity.items()]
        print(f"  {version:8} " + "   ".join(parts))
    skipped = len(read_rows(CALIBRATION_CSV)) + len(read_rows(LOGS_CSV)) - len(rows)
    print(
        f"{len(rows)} rows evaluated; {skipped} skipped (no model config, pipeline parallel, duplicate, or no budget)"
    )
    print(f"(GiB = {GIB} bytes, MiB = {MIB} bytes)")


if __name__ == "__main__":
    main()
