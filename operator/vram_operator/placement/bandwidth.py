"""Memory bandwidth of GPU products, used to rank GPUs for latency-critical servers.

Figures are the vendors' published peak memory bandwidths in GB/s. A product is matched by the
longest run of consecutive name tokens, so "A100" never matches "A10" and "RTX A4000" never
matches "RTX A400".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_BANDWIDTH_GBPS: dict[str, float] = {
    "b200": 8000,
    "h200": 4800,
    "gh200": 4000,
    "h100 nvl": 3900,
    "h100": 3350,
    "h100 sxm": 3350,
    "h100 pcie": 2000,
    "h800": 3350,
    "a100 sxm4 80gb": 2039,
    "a100 80gb pcie": 1935,
    "a100": 1555,
    "a800": 2039,
    "v100": 900,
    "a40": 696,
    "a30": 933,
    "a10": 600,
    "a10g": 600,
    "a16": 800,
    "a2": 200,
    "l40s": 864,
    "l40": 864,
    "l20": 864,
    "l4": 300,
    "t4": 320,
    "rtx 5090": 1792,
    "rtx 4090": 1008,
    "rtx 4080": 717,
    "rtx 4070": 504,
    "rtx 4060": 272,
    "rtx 3090 ti": 1008,
    "rtx 3090": 936,
    "rtx 3080": 760,
    "rtx 3060": 360,
    "rtx 6000 ada": 960,
    "rtx 4000 ada": 360,
    "rtx a6000": 768,
    "rtx a5500": 768,
    "rtx a5000": 768,
    "rtx a4500": 640,
    "rtx a4000": 448,
    "rtx a2000": 288,
    "rtx a1000": 192,
    "rtx a400": 96,
    "quadro rtx 8000": 672,
    "quadro rtx 6000": 672,
}
_PATTERNS: tuple[tuple[tuple[str, ...], float], ...] = tuple(
    sorted(((tuple(k.split()), v) for k, v in _BANDWIDTH_GBPS.items()), key=lambda kv: -len(kv[0]))
)
# Unknown products: GPUs with more memory tend to have wider buses. About 32 GB/s per GiB sits
# between workstation cards (24 GiB ~ 768 GB/s) and data-centre HBM parts (80 GiB ~ 2-3 TB/s).
_ESTIMATE_GBPS_PER_GIB = 32.0
_ESTIMATE_BOUNDS = (64.0, 3000.0)


@dataclass(frozen=True)
class Bandwidth:
    """A GPU's memory bandwidth and whether it was estimated (unknown product)."""

    gbps: float
    estimated: bool


def _tokens(name: str) -> tuple[str, ...]:
    return tuple(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


def _contains(tokens: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    width = len(pattern)
    return any(tokens[i : i + width] == pattern for i in range(len(tokens) - width + 1))


@functools.lru_cache(maxsize=256)  # a fleet has few products; every planning run asks for each of its GPUs
def bandwidth_of(name: str, total_mib: float) -> Bandwidth:
    """Memory bandwidth of a product by name; estimated from memory size when the name is unknown."""
    tokens = _tokens(name)
    for pattern, gbps in _PATTERNS:
        if _contains(tokens, pattern):
            return Bandwidth(gbps, estimated=False)
    low, high = _ESTIMATE_BOUNDS
    return Bandwidth(min(high, max(low, total_mib / 1024 * _ESTIMATE_GBPS_PER_GIB)), estimated=True)
