"""vLLM memory failures: recognise them in pod output and decide a bounded correction."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

MIB_PER_GIB = 1024.0


class FailureKind(Enum):
    """Memory failures the operator can correct; the value is the Degraded condition reason."""

    KV_CACHE_NO_MEMORY = "NoCacheBlocks"  # utilization too low: nothing left for the KV cache
    KV_CACHE_TOO_SMALL = "MaxModelLenTooLarge"  # utilization too low: the KV cache cannot hold one request
    STARTUP_FREE_MEMORY = "StartupFreeMemory"  # utilization too high for what is free at start


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str  # the engine's line, for the condition
    free_mib: float | None = None  # free memory vLLM saw at start (startup failure only)
    total_mib: float | None = None
    missing_mib: float | None = None  # KV memory short of one max_model_len request (MaxModelLenTooLarge)


_KV_CACHE = re.compile(r"No available memory for the cache blocks[^\n]*")
_STARTUP = re.compile(
    r"Free memory on device[^(\n]*\((?P<free>[0-9.]+)/(?P<total>[0-9.]+) GiB\) on startup is less than desired "
    r"GPU memory utilization[^\n]*"
)
# vLLM before 0.11 spelled it "models's".
_MAX_MODEL_LEN = re.compile(
    r"To serve at least one request with the models?'s? max seq len \([0-9]+\), \((?P<needed>[0-9.]+) GiB KV "
    r"cache is needed, which is larger than the available KV cache memory \((?P<available>-?[0-9.]+) GiB\)[^\n]*"
)
_STARTUP_BARE = re.compile(r"Free memory on device[^\n]*on startup is less than desired GPU memory utilization[^\n]*")


def classify(output: str) -> Failure | None:
    """The memory failure named in a termination message or log tail, or None."""
    if found := _KV_CACHE.search(output):
        return Failure(FailureKind.KV_CACHE_NO_MEMORY, found.group(0).strip())
    if found := _MAX_MODEL_LEN.search(output):
        missing = float(found.group("needed")) - float(found.group("available"))
        return Failure(FailureKind.KV_CACHE_TOO_SMALL, found.group(0).strip(), missing_mib=missing * MIB_PER_GIB)
    if found := _STARTUP.search(output):
        return Failure(
            FailureKind.STARTUP_FREE_MEMORY,
            found.group(0).strip(),
            free_mib=float(found.group("free")) * MIB_PER_GIB,
            total_mib=float(found.group("total")) * MIB_PER_GIB,
        )
    if found := _STARTUP_BARE.search(output):
        return Failure(FailureKind.STARTUP_FREE_MEMORY, found.group(0).strip())
    return None


@dataclass(frozen=True)
class Correction:
    """What to do next; `utilization` is set for the adjust action."""

    action: Literal["adjust", "replace", "give_up"]
    utilization: float | None
    message: str


def correct(
    failure: Failure,
    *,
    attempts: int,
    max_attempts: int,
    utilization: float,
    total_mib: float,
    headroom_mib: float,
    margin_mib: float,
    step: float = 0.05,
    beyond_share_mib: float = 0.0,
) -> Correction:
    """A bounded correction for a memory failure.

    `headroom_mib` is what this server may use on its GPU: total minus other servers'
    reservations and foreign processes. Raise utilization for a KV-cache failure (by `step`, or by
    what the KV cache lacks for one request when vLLM says so), lower it for a start-up failure,
    within that headroom; re-place when no value fits; give up after `max_attempts` so that a
    failure can never loop. `beyond_share_mib` is what vLLM holds beyond `utilization x total`
    (its CUDA graphs before 0.21): the headroom and the free memory must hold it too.
    """
    if attempts >= max_attempts:
        return Correction("give_up", None, f"gave up after {attempts} corrections: {failure.message}")
    beyond = max(0.0, beyond_share_mib)
    ceiling = _floor2(max(0.0, headroom_mib - margin_mib - beyond) / total_mib) if total_mib else 0.0
    if failure.kind in (FailureKind.KV_CACHE_NO_MEMORY, FailureKind.KV_CACHE_TOO_SMALL):
        lacking = (failure.missing_mib or 0.0) / total_mib if total_mib else 0.0
        wanted = _floor2(utilization + max(step, _ceil2(lacking)) + 1e-9)
        chosen = min(wanted, ceiling)
        if chosen > utilization:
            return Correction(
                "adjust", chosen, f"raised utilization {utilization:.2f} -> {chosen:.2f} for the KV cache"
            )
        return Correction("replace", None, f"no room above utilization {utilization:.2f} on this GPU: re-placing")
    free = failure.free_mib if failure.free_mib is not None else headroom_mib
    seen_total = failure.total_mib or total_mib
    fits_free = _floor2(max(0.0, free - margin_mib - beyond) / seen_total) if seen_total else 0.0
    chosen = min(fits_free, ceiling)
    if 0.0 < chosen < utilization:
        return Correction("adjust", chosen, f"lowered utilization {utilization:.2f} -> {chosen:.2f} to fit free memory")
    return Correction("replace", None, f"free memory cannot hold utilization {utilization:.2f}: re-placing")


def _ceil2(value: float) -> float:
    return math.ceil(value * 100 - 1e-9) / 100


def _floor2(value: float) -> float:
    # Utilization is written with two decimals; rounding down keeps it within the memory.
    return int(value * 100) / 100
