"""The estimator against real vLLM start-up logs (tests/fixtures/vllm-startup-calibration.csv)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _calibration() -> ModuleType:
    # The benchmark script owns the row -> estimate mapping; the test runs the same code.
    spec = importlib.util.spec_from_file_location(
        "estimator_calibration", ROOT / "benchmarks" / "estimator_calibration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CALIBRATION = _calibration()
ROWS = CALIBRATION.read_rows()


def _row_id(row: dict[str, str]) -> str:
    return f"{row['model'].split()[0]}-v{row['vllm_version']}-tp{row['tp']}-kv{row['kv_cache_dtype'] or 'auto'}"


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(row) for row in ROWS])
def test_row_matches_the_log(row: dict[str, str]) -> None:
    result = CALIBRATION.estimate_row(row)
    assert result.weights_gib == pytest.approx(result.logged_weights_gib, rel=0.03)
    if result.failed:
        assert not result.fit.fits
        assert result.fit.reason == "NoCacheBlocks"
        assert result.fit.kv_cache_tokens == 0
        return
    assert result.fit.fits, result.fit.message
    if result.logged_tokens is not None:
        assert result.fit.kv_cache_tokens == pytest.approx(result.logged_tokens, rel=0.05)
    assert result.fit.kv_cache_mib / 1024 == pytest.approx(result.logged_kv_gib, rel=0.05)


def test_every_row_is_checked() -> None:
    assert len(ROWS) >= 6
    assert any(CALIBRATION.estimate_row(row).failed for row in ROWS)
