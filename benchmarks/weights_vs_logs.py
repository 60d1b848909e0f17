"""Weights per GPU against what vLLM logged ("Model loading took N GiB"), row by row.

Reads tests/fixtures/vllm-startup-logs.csv (published start-up logs, each with its source URL) and
the model configs next to it; for every row with a logged weight and a config it predicts what one
GPU loads (the first pipeline stage where there are several, as the logs report) the way the
operator sizes it: checkpoint from config.json shapes, that rank's share, and what vLLM adds on
the GPU (MXFP4 padding, rotary tables). Prints the error per row and the worst and median.

    python benchmarks/weights_vs_logs.py [CSV]
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.loaded import loaded_bytes_per_rank
from vram_operator.sizing.pipeline import stage_architectures, stage_weights_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
LOGS_CSV = FIXTURES / "vllm-startup-logs.csv"
MODEL_CONFIGS = FIXTURES / "model-configs"
GIB = 1024**3
# The log's free-text quantization -> the spec's name (first match wins); None = as the checkpoint declares.
QUANTIZATION_WORDS = (("w4a16", "gptq"), ("gptq", "gptq"), ("awq", "awq"), ("w8a8", "int8"), ("fp8", "fp8"))


def spec_quantization(logged: str) -> str | None:
    text = logged.lower()
    if text in ("", "none") or "mxfp4" in text:
        return None
    return next((name for word, name in QUANTIZATION_WORDS if word in text), None)


def config_for(model: str) -> dict[str, object] | None:
    path = MODEL_CONFIGS / f"{model.split(' ', maxsplit=1)[0].replace('/', '__')}.json"
    if not path.is_file():
        return None
    config: dict[str, object] = json.loads(path.read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}


def predicted_gib(row: dict[str, str], config: dict[str, object]) -> float:
    arch = from_config(config)
    quantization = spec_quantization(row["quantization"])
    dtype = row["dtype"] or "auto"
    tp, pp = int(row["tp"] or 1), int(row.get("pipeline_parallel") or 1)
    checkpoint = weights_bytes_for_architecture(arch, dtype, quantization)
    first = stage_architectures(arch, pp)[0]
    share = checkpoint if pp == 1 else stage_weights_bytes(checkpoint, arch, first, dtype, quantization)
    return loaded_bytes_per_rank(share, first, tp, dtype=dtype, quantization=quantization) / GIB


def weighed_rows(path: Path = LOGS_CSV) -> list[tuple[dict[str, str], float]]:
    """(row, predicted GiB) for every distinct logged start with a weight and a model config."""
    result: list[tuple[dict[str, str], float]] = []
    seen: set[tuple[str, ...]] = set()
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["vllm_version"], row["model"], row["quantization"], row["dtype"], row["tp"],
                   row.get("pipeline_parallel") or "1", row["gpu"], row["weights_gib"])  # fmt: skip
            config = config_for(row["model"])
            if not row["weights_gib"] or config is None or key in seen:
                continue
            seen.add(key)
            result.append((row, predicted_gib(row, config)))
    return result


def main(argv: list[str]) -> int:
    errors: list[float] = []
    for row, predicted in weighed_rows(Path(argv[1]) if len(argv) > 1 else LOGS_CSV):
        logged = float(row["weights_gib"])
        errors.append(predicted / logged - 1)
        print(
            f"{row['vllm_version']:>9} {row['model'][:48]:48} {row['gpu'][:12]:12} tp{row['tp']} "
            f"pp{row.get('pipeline_parallel') or 1} logged {logged:7.2f} predicted {predicted:7.2f} "
            f"error {100 * errors[-1]:+6.1f}%"
        )
    if errors:
        worst = max(errors, key=abs)
        print(f"{len(errors)} rows: median |error| {100 * statistics.median(abs(e) for e in errors):.2f}%, "
              f"worst {100 * worst:+.1f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
