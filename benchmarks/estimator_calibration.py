"""Compare the vLLM memory model with real vLLM start-up logs.

Reads tests/fixtures/vllm-startup-calibration.csv and the model configs next to it, runs
config -> architecture -> weights (params x dtype) -> profile -> fit for every row, and prints
the error of weights and KV-cache tokens (or KV GiB where the log gave no token count).

    python benchmarks/estimator_calibration.py
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.vllm import GIB, VllmFit, VllmSettings, fit, profile, weights_per_rank

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
CALIBRATION_CSV = FIXTURES / "vllm-startup-calibration.csv"
MODEL_CONFIGS = FIXTURES / "model-configs"


@dataclass(frozen=True)
class RowResult:
    row: dict[str, str]
    fit: VllmFit
    weights_gib: float

    @property
    def logged_weights_gib(self) -> float:
        return float(self.row["weights_gib"])

    @property
    def logged_tokens(self) -> int | None:
        value = self.row["kv_cache_tokens"]
        return int(value) if value else None

    @property
    def logged_kv_gib(self) -> float:
        """The log's KV pool, or (when not printed) requested - weights - activation - non-torch."""
        if self.row["kv_cache_gib"]:
            return float(self.row["kv_cache_gib"])
        requested = float(self.row["gpu_total_gib"]) * float(self.row["gpu_memory_utilization"])
        used = sum(float(self.row[key]) for key in ("weights_gib", "activation_peak_gib", "non_torch_gib"))
        return requested - used

    @property
    def failed(self) -> bool:
        return self.row["notes"].startswith("FAILED")


def read_rows(path: Path = CALIBRATION_CSV) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _config_for(model: str) -> dict[str, object]:
    model_id = model.split(maxsplit=1)[0]
    loaded: dict[str, object] = json.loads((MODEL_CONFIGS / f"{model_id.replace('/', '__')}.json").read_text())
    return loaded


def _quantization(text: str) -> str | None:
    """The CSV describes quantization in words ("awq/gptq 4-bit (inferred ...)")."""
    word = text.split("/", maxsplit=1)[0].split(maxsplit=1)[0].lower() if text else "none"
    return None if word == "none" else word


def estimate_row(row: dict[str, str]) -> RowResult:
    arch = from_config(_config_for(row["model"]))
    tp = int(row["tp"])
    quantization = _quantization(row["quantization"])
    total = weights_bytes_for_architecture(arch, row["dtype"] or "auto", quantization)
    settings = VllmSettings(
        engine_version=row["vllm_version"],
        max_model_len=int(row["max_model_len"]),
        max_num_seqs=int(row["max_num_seqs"]) if row["max_num_seqs"] else None,
        tensor_parallel_size=tp,
        kv_cache_dtype=row["kv_cache_dtype"] or "auto",
        block_size=int(row["block_size"]) if row["block_size"] else 16,
        dtype=row["dtype"] or "auto",
    )
    gpu_total_mib = float(row["gpu_total_gib"]) * 1024
    prof = profile(arch, weights_per_rank(total, arch, tp), settings, gpu_total_mib, gpu_name=row["gpu"])
    result = fit(prof, gpu_total_mib, float(row["gpu_memory_utilization"]))
    return RowResult(row=row, fit=result, weights_gib=prof.weights_mib / 1024)


def _percent(estimate: float, logged: float) -> float:
    return 100.0 * (estimate - logged) / logged


def main() -> None:
    results = [estimate_row(row) for row in read_rows()]
    header = f"{'model':34} {'ver':8} {'tp':>2} {'kv':5} {'weights%':>9} {'kv tokens%':>11} {'kv GiB%':>8}  outcome"
    print(header)
    print("-" * len(header))
    weight_errors, token_errors = [], []
    for result in results:
        weights_error = _percent(result.weights_gib, result.logged_weights_gib)
        weight_errors.append(abs(weights_error))
        token_text = kv_text = "-"
        if result.failed:
            outcome = f"{result.fit.reason} (log: failed)"
        else:
            outcome = result.fit.reason
            kv_text = f"{_percent(result.fit.kv_cache_mib / 1024, result.logged_kv_gib):+.2f}"
            if result.logged_tokens:
                token_error = _percent(result.fit.kv_cache_tokens, result.logged_tokens)
                token_errors.append(abs(token_error))
                token_text = f"{token_error:+.2f}"
        row = result.row
        print(
            f"{row['model'].split()[0][:34]:34} {row['vllm_version'][:8]:8} {row['tp']:>2} "
            f"{(row['kv_cache_dtype'] or 'auto')[:5]:5} {weights_error:+9.2f} {token_text:>11} {kv_text:>8}  {outcome}"
        )
    print()
    print(f"weights   |error| %: max {max(weight_errors):.2f}  mean {sum(weight_errors) / len(weight_errors):.2f}")
    if token_errors:
        print(f"KV tokens |error| %: max {max(token_errors):.2f}  mean {sum(token_errors) / len(token_errors):.2f}")
    print(f"(GiB = {GIB} bytes)")


if __name__ == "__main__":
    main()
