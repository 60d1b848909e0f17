"""The engine's own report in the server's status: `status.engineReport` from its start-up log and the
EstimateAccurate condition comparing it with `status.estimate` (pure: log text and clock come in)."""

from __future__ import annotations

from collections.abc import Mapping

from vram_operator.api.inference_server import EngineReportStatus, InferenceServerStatus
from vram_operator.controller.conditions import set_condition
from vram_operator.controller.pods import PodFacts
from vram_operator.sizing.engine_report import EngineFigures, FigureError, figure_errors, read_engine_log, worst_error

ESTIMATE_ACCURATE = "EstimateAccurate"
ESTIMATE_OFF = "EstimateOff"
VERSION_MAX = 64


# A Ready pod's log is read until it holds the engine's complete report, at most this many times (a log
# may lag its pod's readiness, e.g. one a runtime serves a moment later); then never again.
MAX_LOG_READS = 3


def pods_to_read(pods: list[PodFacts], reads: Mapping[str, int]) -> list[PodFacts]:
    """Ready pods whose log is still to be read (`reads`: pod UID -> reads so far, MAX_LOG_READS once
    its report was complete): an engine is Ready only after it sized itself."""
    return sorted((p for p in pods if p.ready and reads.get(p.uid, 0) < MAX_LOG_READS), key=lambda p: p.name)


def engine_report(engine: str, log_text: str, pod: str, now: str) -> EngineReportStatus | None:
    """The report a start-up log holds, or None when it names none of the figures."""
    figures = read_engine_log(engine, log_text)
    if figures.empty:
        return None
    return EngineReportStatus(
        weights_mib=figures.weights_mib,
        kv_cache_mib=figures.kv_cache_mib,
        kv_cache_tokens=figures.kv_cache_tokens,
        max_concurrency=figures.max_concurrency,
        engine_version=figures.engine_version[:VERSION_MAX],  # "0.11.0+cu118", "nightly": kept as printed
        pod=pod,
        reported_at=now,
    )


def report_complete(report: EngineReportStatus | None) -> bool:
    """The engine finished sizing itself: its weights and its KV pool are in the report."""
    return (
        report is not None
        and report.weights_mib is not None
        and (report.kv_cache_mib is not None or report.kv_cache_tokens is not None)
    )


def report_errors(status: InferenceServerStatus) -> list[FigureError]:
    """Each figure of the engine's report against the estimate (none without both)."""
    report, estimate = status.engine_report, status.estimate
    if report is None or estimate is None:
        return []
    figures = EngineFigures(
        weights_mib=report.weights_mib, kv_cache_mib=report.kv_cache_mib, kv_cache_tokens=report.kv_cache_tokens
    )
    return figure_errors(figures, estimate)


def with_estimate_accuracy(
    status: InferenceServerStatus, threshold: float, *, generation: int | None, now: str
) -> InferenceServerStatus:
    """EstimateAccurate: False (EstimateOff, naming the figure furthest off and both values) when a
    reported figure differs from the estimate by more than `threshold`; True when all are within it;
    absent without a report to compare."""
    errors = report_errors(status)
    if not errors:  # nothing to compare (no report, e.g. a server re-placed): no condition
        kept = [c for c in status.conditions if c.type != ESTIMATE_ACCURATE]
        return status if len(kept) == len(status.conditions) else status.model_copy(update={"conditions": kept})
    worst = worst_error(errors, threshold)
    if worst is None:
        closest = max(errors, key=lambda e: abs(e.error))
        accurate, reason = True, ESTIMATE_ACCURATE
        message = f"the engine's report is within {threshold:.0%} of the estimate (largest {closest.describe()})"
    else:
        accurate, reason = False, ESTIMATE_OFF
        message = f"{worst.describe()}; more than {threshold:.0%} off"
    conditions = set_condition(
        status.conditions, ESTIMATE_ACCURATE, accurate, reason, message, generation=generation, now=now
    )
    return status.model_copy(update={"conditions": conditions})
