"""Seeds in, reports out: generate each seed's steps, run them, and on a violation shrink the steps
(bounded delta debugging) and say how to replay them. Used by the CI test and the soak script."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from model_based.driver import Driver, RunResult
from model_based.generate import GpuSlot, generate
from model_based.shrink import ddmin
from model_based.steps import CHECK, Step, dump_steps, operation_count

REPLAY_ENV = "VRAM_MB_REPLAY"  # a file with a step list (dump_steps' JSON): the CI test runs it instead


@dataclass
class SeedReport:
    seed: int
    steps: list[Step]
    result: RunResult
    minimal: list[Step] = field(default_factory=list)
    replays: int = 0
    shrink_complete: bool = True

    @property
    def ok(self) -> bool:
        return not self.result.violations

    def describe(self) -> str:
        if self.ok:
            return f"seed {self.seed}: {self.result.operations} operations, 0 violations ({self.result.seconds:.0f}s)"
        lines = [
            f"seed {self.seed}: {len(self.result.violations)} violation(s) at step {self.result.failed_at}"
            f" (logs: {self.result.logs}):"
        ]
        lines += [f"  {violation}" for violation in self.result.violations]
        if self.minimal:
            done = "1-minimal" if self.shrink_complete else "shrinking budget spent"
            lines.append(f"minimal steps ({operation_count(self.minimal)} operations, {self.replays} replays, {done}):")
            lines += [f"  {step.describe()}" for step in self.minimal]
        lines.append(f"replay: write this to a file F and run with {REPLAY_ENV}=F")
        lines.append(dump_steps(self.minimal or self.steps))
        return "\n".join(lines)


def run_seed(
    driver: Driver,
    seed: int,
    gpus: list[GpuSlot],
    operations: int,
    *,
    check_every: int = 20,
    shrink_budget: int = 0,
    weights: dict[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> SeedReport:
    steps = generate(seed, gpus, operations, check_every, weights)
    report = SeedReport(seed, steps, driver.run(f"mb{seed}", steps, seed))
    if report.ok or shrink_budget <= 0:
        return report
    failing = {v.invariant for v in report.result.violations}
    # Only what ran up to the failing check matters; the checks in between are kept as steps.
    prefix = steps[: (report.result.failed_at or len(steps) - 1) + 1]
    attempt = 0

    def fails(candidate: list[Step]) -> bool:
        nonlocal attempt
        attempt += 1
        replay = driver.run(f"mb{seed}r{attempt}", candidate, seed)
        log(f"  replay {attempt}: {operation_count(candidate)} operations -> {len(replay.violations)} violation(s)")
        return bool({v.invariant for v in replay.violations} & failing)

    shrunk = ddmin(prefix, fails, shrink_budget)
    report.minimal = shrunk.items if shrunk.items and shrunk.items[-1].op == CHECK else [*shrunk.items, Step(CHECK)]
    report.replays, report.shrink_complete = shrunk.replays, shrunk.complete
    return report


def summary(reports: list[SeedReport], seconds: float) -> dict[str, object]:
    return {
        "seeds": [r.seed for r in reports],
        "operations": sum(r.result.operations for r in reports),
        "checks": sum(r.result.checks for r in reports),
        "violations": sum(len(r.result.violations) for r in reports),
        "failingSeeds": [r.seed for r in reports if not r.ok],
        "wallSeconds": round(seconds, 1),
        "observed": dict(sorted(sum((r.result.observed for r in reports), Counter()).items())),
    }


def summary_line(reports: list[SeedReport], seconds: float) -> str:
    return json.dumps(summary(reports, seconds), sort_keys=True)
