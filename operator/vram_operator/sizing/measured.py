"""Measured beats predicted: what a server's engine reported (and the agent measured) on one GPU
product, kept per model and memory-relevant settings, sizes the next placement of the same model
(pure: the records are read at the edge and passed in as text).

A record is one JSON object under a key made of the settings that change memory (`settings_key`) and
the GPU product: engine, image and engine version, model (name, path, weightsMiB, quantization,
dtype), tensor parallelism, maxModelLen, maxNumSeqs, maxNumBatchedTokens, KV cache dtype, a manual
utilization and the engine arguments. Two servers with the same key run the same engine on the same
model in the same way: the second one gets exactly the memory the first one used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vram_operator.api.inference_server import EstimateStatus, InferenceServerSpec
from vram_operator.sizing.server import ServerSizing

# At most this many records are kept (oldest dropped): a ConfigMap holds at most 1 MiB.
MAX_RECORDS = 400


@dataclass(frozen=True)
class MeasuredRun:
    """One server's run as its engine reported it, per GPU."""

    settings: str  # settings_key of the spec it ran with
    gpu_product: str
    gpu_total_mib: float
    budget_mib: float  # what it held per GPU: its reservation, or what it was measured to use when more
    utilization: float | None  # vLLM's --gpu-memory-utilization it ran at
    weights_mib: float
    kv_cache_mib: float
    kv_cache_tokens: int
    max_concurrency: float
    engine_version: str
    server: str  # "namespace/name" it was measured on
    measured_at: str

    @property
    def name(self) -> str:
        return record_name(self.settings, self.gpu_product)

    def describe(self) -> str:
        version = f", engine {self.engine_version}" if self.engine_version else ""
        return f"a measured run of {self.server} on {self.gpu_product or 'its GPU'} ({self.measured_at}{version})"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MeasuredRun | None:
        """A record, or None for one that is not (a hand edit, an older layout): it is ignored."""
        try:
            raw = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            if not isinstance(raw, dict) or set(raw) != fields:
                return None
            run = cls(**raw)
            numbers = (run.gpu_total_mib, run.budget_mib, run.weights_mib, run.kv_cache_mib, run.max_concurrency)
            if not all(isinstance(n, int | float) and n >= 0 for n in numbers) or run.budget_mib <= 0:
                return None
        except (ValueError, TypeError):
            return None
        return run


def settings_key(spec: InferenceServerSpec) -> str:
    """The settings of a spec that change what its engine uses, as one canonical string."""
    model = spec.model
    settings = {
        "engine": spec.engine,
        "image": spec.image,
        "engineVersion": spec.engine_version or "",
        "model": (model.name or model.path or "") if model else "",
        "weightsMiB": model.weights_mib if model else None,
        "quantization": (model.quantization or "") if model else "",
        "dtype": model.dtype if model else "auto",
        "tensorParallelSize": spec.tensor_parallel_size,
        "pipelineParallelSize": spec.pipeline_parallel_size,
        "maxModelLen": spec.max_model_len,
        "maxNumSeqs": spec.max_num_seqs,
        "maxNumBatchedTokens": spec.max_num_batched_tokens,
        "kvCacheDtype": spec.kv_cache_dtype or "",
        "gpuMemoryUtilization": spec.gpu_memory_utilization,
        "args": list(spec.args),
    }
    return json.dumps(settings, separators=(",", ":"), sort_keys=True)


def record_name(settings: str, gpu_product: str) -> str:
    """The record's key: a ConfigMap data key ([-._a-zA-Z0-9]+), one per settings and GPU product."""
    return "run-" + hashlib.sha256(f"{settings}\n{gpu_product}".encode()).hexdigest()[:24]


def read_records(data: Mapping[str, str]) -> dict[str, list[MeasuredRun]]:
    """The records of a ConfigMap's data, by settings_key (records that do not parse are left out)."""
    runs: dict[str, list[MeasuredRun]] = {}
    for name, text in sorted(data.items()):
        run = MeasuredRun.from_json(text)
        if run is not None and run.name == name:
            runs.setdefault(run.settings, []).append(run)
    return runs


def with_record(data: Mapping[str, str], run: MeasuredRun, limit: int = MAX_RECORDS) -> dict[str, str]:
    """The data with `run` kept (replacing the one of the same key), the oldest dropped beyond `limit`."""
    kept = {name: text for name, text in data.items() if name != run.name}
    dated = sorted(
        ((parsed.measured_at if (parsed := MeasuredRun.from_json(text)) else "", name) for name, text in kept.items()),
        reverse=True,
    )
    survivors = {name for _, name in dated[: max(0, limit - 1)]}
    return {**{name: kept[name] for name in survivors}, run.name: run.to_json()}


def run_on(runs: Sequence[MeasuredRun], gpu_product: str, gpu_total_mib: float) -> MeasuredRun | None:
    """The run measured on a GPU of this product and size, if any."""
    return next((r for r in runs if r.gpu_product == gpu_product and abs(r.gpu_total_mib - gpu_total_mib) < 1.0), None)


def measured_budget(runs: Iterable[MeasuredRun]) -> float | None:
    """The budget per GPU to place with: what the measured run(s) used (the largest of several products)."""
    return max((run.budget_mib for run in runs), default=None)


def measured_estimate(run: MeasuredRun, predicted: EstimateStatus) -> EstimateStatus:
    """The estimate from a measured run: the engine's figures, the budget it used; the parts it does not
    report (activation, overhead, bytes per token) stay predicted."""
    return predicted.model_copy(
        update={
            "weights_mib": run.weights_mib,
            "kv_cache_mib": run.kv_cache_mib,
            "kv_cache_tokens": run.kv_cache_tokens,
            "max_concurrency": run.max_concurrency,
            "total_mib": run.budget_mib,
            "source": "measured",
        }
    )


def sized_from_runs(sizing: ServerSizing, runs: Sequence[MeasuredRun]) -> ServerSizing:
    """The sizing of a server with measured runs: placed with the budget they used, saying so; the
    engine's fit on a GPU of a measured product, with at least that budget, takes the run's figures
    (fleet). Where a GPU is too small, it may still shrink to the model's floor (then sized by the model)."""
    budget = measured_budget(runs)
    if budget is None or sizing.engine == "generic":
        return sizing
    return dataclasses.replace(
        sizing,
        preferred_mib=budget,
        min_mib=min(sizing.min_mib, *(run.budget_mib for run in runs)),
        measured=tuple(runs),
        reasons=(*sizing.reasons, *(f"sized from {run.describe()}: {run.budget_mib:.0f} MiB per GPU" for run in runs)),
    )
