"""The engine's own report in the server's status: `status.engineReport` from its start-up log and the
EstimateAccurate condition comparing it with `status.estimate` (pure: log text and clock come in)."""

from __future__ import annotations

from vram_operator.api.inference_server import EngineReportStatus, InferenceServerStatus
from vram_operator.controller.conditions import set_condition
from vram_operator.controller.pods import PodFacts
from vram_operator.sizing.engine_report import EngineFigures, FigureError, figure_errors, read_engine_log, worst_error

ESTIMATE_ACCURATE = "EstimateAccurate"
ESTIMATE_OFF = "EstimateOff"


def pods_to_read(pods: list[PodFacts], read: set[str]) -> list[PodFacts]:
    """Ready pods whose log was not read yet: an engine is Ready only after it sized itself, so one
    read per pod is enough (a restarted container is a new start: its pod is read again only if new)."""
    return sorted((pod for pod in pods if pod.ready and pod.uid not in read), key=lambda pod: pod.name)


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
        engine_version=figures.engine_version,
        pod=pod,
        reported_at=now,
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
    reported figure differs from the estimate by more than `threshold`; True when all are within it."""
    errors = report_errors(status)
    if not errors:
        return status
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
