"""Soak the operator with randomized (model-based) sequences on the local control plane.

Each seed is a fresh run (own namespaces, own operator process) of `--operations` seeded random steps:
server creates/updates/deletes, GpuAssignment preview/apply/rollback, GPU loss, foreign memory
spikes, agent stalls, operator kill -9 and restart; the invariants are checked from outside every
`--check-every` operations (see tests/model_based). Prints one line per seed, every violation with its
shrunk steps, and a JSON summary: operations run, seeds, violations, wall time.

    python benchmarks/operator_soak.py                         # seeds 1..10 x 100 operations
    python benchmarks/operator_soak.py --seeds 1-25 --operations 40 --shrink 8
    python benchmarks/operator_soak.py --replay steps.json     # one failing step list again

Needs the binaries from hack/build-tools.sh. Exit code 1 when any seed found a violation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "hack"), str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from localcluster import LocalCluster  # noqa: E402
from localcluster.resources import admin_client  # noqa: E402
from model_based.driver import Driver  # noqa: E402
from model_based.generate import WEIGHTS  # noqa: E402
from model_based.session import run_seed, summary_line  # noqa: E402
from model_based.steps import load_steps  # noqa: E402
from model_based.twin import GpuTwin, PublishedTwin, SimulatedTwin, usable_slots  # noqa: E402

MARGIN_MIB = 256  # the operator harness's --margin-mib
USABLE_GPUS = {"workstation": 2, "h100-0": 3}  # as in tests/integration/test_model_based.py


def seed_list(text: str) -> list[int]:
    """ "1-5,9" -> [1, 2, 3, 4, 5, 9]."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=seed_list, default=seed_list("1-10"), help="e.g. 1-10 or 3,7,9")
    parser.add_argument("--operations", type=int, default=100, help="operations per seed")
    parser.add_argument("--check-every", type=int, default=20, help="operations between invariant checks")
    parser.add_argument("--shrink", type=int, default=8, help="replays spent shrinking a failing seed (0: none)")
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="OP=N",
        help="override an operation's weight (e.g. assignApply=20; 0 leaves it out); repeat",
    )
    parser.add_argument("--logs", type=Path, help="keep each run's operator and twin logs here (default: a temp dir)")
    parser.add_argument("--replay", type=Path, help="run this step list (JSON) instead of seeds")
    parser.add_argument("--replay-seed", type=int, default=0, help="the twin's seed for --replay")
    parser.add_argument(
        "--twin",
        choices=("simulated", "published"),
        default="simulated",
        help="simulated: vram-operator simulate plays the engines; published: static GpuNode reports",
    )
    args = parser.parse_args()

    weights = dict(WEIGHTS)
    for item in args.weight:
        op, _, number = item.partition("=")
        if op not in WEIGHTS or not number.isdigit():
            parser.error(f"--weight {item}: want OP=N with OP one of {', '.join(WEIGHTS)}")
        weights[op] = int(number)
    started = time.monotonic()
    with LocalCluster() as cluster, tempfile.TemporaryDirectory(prefix="vram-soak-") as temporary:
        logs = args.logs or Path(temporary)
        api = admin_client(cluster.kubeconfig)
        usable = usable_slots(list(cluster.nodes), USABLE_GPUS)
        twin: GpuTwin = (
            SimulatedTwin(cluster.kubeconfig, list(cluster.nodes), usable, logs)
            if args.twin == "simulated"
            else PublishedTwin(api, list(cluster.nodes), usable)
        )
        driver = Driver(api, cluster.kubeconfig, twin, usable, logs, margin_mib=MARGIN_MIB)
        if args.replay:
            result = driver.run("replay", load_steps(args.replay.read_text()), args.replay_seed)
            for violation in result.violations:
                print(violation)
            print(f"replay: {result.operations} operations, {len(result.violations)} violations")
            print(f"observed: {dict(sorted(result.observed.items()))}")
            print("\n".join(result.final))
            return 1 if result.violations else 0
        reports = []
        for seed in args.seeds:
            report = run_seed(
                driver,
                seed,
                usable,
                args.operations,
                check_every=args.check_every,
                shrink_budget=args.shrink,
                weights=weights,
            )
            reports.append(report)
            print(report.describe(), flush=True)
        print(summary_line(reports, time.monotonic() - started))
        return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
