"""Cost of one agent poll on a busy node: 8 GPUs x 50 processes each.

Compares the agent's in-process NVML poll (a fake NVML module of that shape, processes with
/proc/<pid>/cgroup files under a temporary proc root) with reading the same data by running
`nvidia-smi --query-gpu ... --format=csv` and `--query-compute-apps ...` as subprocesses (the
stand-in script benchmarks/nvidia-smi, since there is no GPU here).

Run: python benchmarks/agent_poll.py [--polls N]
Prints a report; aims: < 20 ms CPU per poll, < 60 MB RSS.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "unit" / "agent"))

from agent_fakes import MIB, FakeDevice, FakeNvml, containerd_cgroup, write_proc  # noqa: E402

from vram_operator.agent.exporter import AgentMetrics  # noqa: E402
from vram_operator.agent.nvml_backend import NvmlBackend  # noqa: E402
from vram_operator.agent.pods import PodDirectory  # noqa: E402
from vram_operator.agent.poller import Agent  # noqa: E402

GPUS = 8
PROCESSES_PER_GPU = 50
FOREIGN_EVERY = 10  # one process in ten belongs to no pod
GPU_QUERY = "index,uuid,name,memory.total,memory.used,memory.free,memory.reserved,compute_cap"
APPS_QUERY = "gpu_uuid,pid,used_memory"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_node(proc_root: Path) -> tuple[list[FakeDevice], list[dict[str, object]]]:
    devices, pods = [], []
    pid = 1000
    for gpu in range(GPUS):
        compute: list[tuple[int, int | None]] = []
        for slot in range(PROCESSES_PER_GPU):
            pid += 1
            compute.append((pid, (100 + slot) * MIB))
            if slot % FOREIGN_EVERY == 0:
                write_proc(proc_root, pid, "0::/system.slice/inference.service\n", "python3")
                continue
            uid = f"{gpu:08x}-0000-4000-8000-{pid:012x}"
            container = f"{pid:064x}"
            write_proc(proc_root, pid, containerd_cgroup(uid, container), "python3")
            pods.append(
                {
                    "metadata": {"uid": uid, "name": f"server-{pid}", "namespace": "ml"},
                    "status": {"containerStatuses": [{"name": "engine", "containerID": f"containerd://{container}"}]},
                }
            )
        used = sum(mib or 0 for _, mib in compute) + 500 * MIB
        devices.append(
            FakeDevice(
                uuid=f"GPU-{gpu:08x}-0000-0000-0000-000000000000",
                name="NVIDIA H100 80GB HBM3",
                total=81559 * MIB,
                used=used,
                reserved=512 * MIB,
                capability=(9, 0),
                compute=compute,
            )
        )
    return devices, pods


def write_smi_output(directory: Path, devices: list[FakeDevice]) -> None:
    gpus = io.StringIO()
    apps = io.StringIO()
    for index, d in enumerate(devices):
        figures = ", ".join(str(v // MIB) for v in (d.total, d.used, d.free, d.reserved))
        gpus.write(f"{index}, {d.uuid}, {d.name}, {figures}, 9.0\n")
        for pid, used in d.compute:
            apps.write(f"{d.uuid}, {pid}, {(used or 0) // MIB}\n")
    (directory / "gpus.csv").write_text(gpus.getvalue())
    (directory / "apps.csv").write_text(apps.getvalue())


def smi_read(smi: str) -> int:
    """What an nvidia-smi based agent does per poll: two subprocess queries, parsed."""
    out_gpus = subprocess.run(
        [smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True
    ).stdout
    out_apps = subprocess.run(
        [smi, f"--query-compute-apps={APPS_QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    gpus = list(csv.reader(io.StringIO(out_gpus), skipinitialspace=True))
    apps = list(csv.reader(io.StringIO(out_apps), skipinitialspace=True))
    return len(gpus) + len(apps)


def measure(polls: int, step: Callable[[], object]) -> tuple[float, float, float]:
    """(own CPU ms, child-process CPU ms, wall ms) per call, averaged over polls calls."""
    step()  # warm caches and lazy imports
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(polls):
        step()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return cpu * 1000 / polls, child * 1000 / polls, wall * 1000 / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args()
    rss_start = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        proc_root = Path(tmp) / "proc"
        devices, pods = build_node(proc_root)
        backend = NvmlBackend(FakeNvml(devices))
        metrics = AgentMetrics("bench-node")
        agent = Agent(backend, proc_root=proc_root, pods=PodDirectory(lambda: pods), metrics=metrics)

        status = agent.poll_once()
        assert status is not None and len(status.gpus) == GPUS
        attributed = sum(1 for g in status.gpus for p in g.processes if p.pod_name)
        poll = measure(args.polls, agent.poll_once)
        # Cold: a fresh agent each time, so every process's /proc files are read (agent start-up).
        cold = measure(
            max(args.polls // 4, 10),
            lambda: Agent(backend, proc_root=proc_root, pods=PodDirectory(lambda: pods), metrics=metrics).poll_once(),
        )
        read = measure(args.polls, backend.snapshot)
        rss_agent = rss_mib()

        os.environ["FAKE_NVIDIA_SMI_DIR"] = tmp
        write_smi_output(Path(tmp), devices)
        smi = measure(max(args.polls // 4, 10), lambda: smi_read(str(HERE / "nvidia-smi")))

        import kubernetes.client  # noqa: F401  (the DaemonSet process loads it too)

        rss_with_client = rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    processes = GPUS * PROCESSES_PER_GPU

    def figures(costs: tuple[float, float, float]) -> str:
        return f"{costs[0]:6.2f} ms CPU, {costs[2]:6.2f} ms wall"

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = [
        f"agent poll benchmark: {GPUS} GPUs x {PROCESSES_PER_GPU} processes "
        f"({attributed} attributed to pods), {args.polls} polls",
        f"  steady poll (NVML read, /proc attribution, status, metrics): {figures(poll)}",
        f"  cold poll (all {processes} processes new, /proc files read):    {figures(cold)}",
        f"  of which the NVML read (fake NVML module):                 {figures(read)}",
        f"  nvidia-smi read (2 subprocess queries + CSV parse):        {figures(smi)}"
        f" + {smi[1]:.2f} ms CPU in the children",
        f"  RSS: {rss_start:.1f} MiB at start, {rss_agent:.1f} MiB after polling, "
        f"{rss_with_client:.1f} MiB with kubernetes.client loaded; peak {peak:.1f} MiB",
        f"  aims: CPU < 20 ms/poll -> {verdict(poll[0] < 20)} (cold: {verdict(cold[0] < 20)});"
        f" RSS < 60 MB -> {verdict(peak * 1.048576 < 60)}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
