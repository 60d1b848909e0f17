"""Operator at scale on the local control plane: N InferenceServers on M KWOK nodes x 8 H100s.

Measures, in one run:
- the API server's raw ceiling: InferenceServer create + status patch per second from a client
  pool with no operator running (what any controller could at best write);
- the operator: seconds until every server is Placed, placements per second, decision latency
  p50/p99 (creation to the Placed condition), reconcile latency p50/p99 (from its own histogram:
  decision and children applied), its peak RSS and CPU time per server;
- the ratio placements/s : ceiling (create+patch)/s;
- the API requests the operator's run cost per server, by verb, resource and subresource (from
  the API server's own apiserver_request_total; "PATCH inferenceservers/status" is the status writes).

Decisions are counted from a watch, not by listing every server each second (that LIST loaded the
API server being measured); the operator's /metrics is scraped every few seconds, as Prometheus would.

    python benchmarks/operator_scale.py                      # 1,000 servers, 250 nodes
    python benchmarks/operator_scale.py --servers 200 --nodes 50
    python benchmarks/operator_scale.py --crds DIR           # CRDs to install (default: crds/)

Needs the binaries from hack/build-tools.sh. Servers run with replicas 0 by default (the
placement path is measured, not KWOK's pod simulation); --replicas 1 adds the pods.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

from kubernetes import client, watch  # noqa: E402

from localcluster import LocalCluster  # noqa: E402
from localcluster.cluster import DEFAULT_CRD_DIR  # noqa: E402
from localcluster.fleet import FakeNode, fake_gpu_uuid, h100_rack  # noqa: E402
from localcluster.resources import admin_client  # noqa: E402

GROUP, VERSION = "vram.dev", "v1alpha1"
BUDGETS_GIB = (4, 8, 12, 20, 40)  # a mix that fills 80 GB GPUs unevenly
WARM_UP = "warm-up"  # decided before the measured servers are created
LIST_EVERY = 10  # polls (seconds) between LISTs of every server while the watch counts decisions
SCRAPE_EVERY_SECONDS = 5.0  # between scrapes of the operator's /metrics (as often as Prometheus would)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def publish_gpu_nodes(custom: client.CustomObjectsApi, nodes: list[FakeNode]) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for node in nodes:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNode", "metadata": {"name": node.name}}
        custom.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body)
        gpus = [
            {
                "index": i,
                "uuid": fake_gpu_uuid(node.name, i),
                "name": gpu.product,
                "memoryTotalMiB": gpu.memory_mib,
                "memoryUsedMiB": 0,
                "memoryFreeMiB": gpu.memory_mib,
                "healthy": True,
            }
            for i, gpu in enumerate(node.gpus)
        ]
        status = {"status": {"backend": "simulated", "lastHeartbeat": now, "gpus": gpus}}
        custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", node.name, status)


def server(name: str, budget_gib: int, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": name},
        "spec": {
            "engine": "generic",
            "image": "example.invalid/s:1",
            "vramBudget": f"{budget_gib}Gi",
            "replicas": replicas,
        },
    }


def create_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]


def api_ceiling(custom: client.CustomObjectsApi, namespace: str, count: int, workers: int) -> float:
    """(create + status patch) per second with no operator: the most any controller could write."""
    patch = {"status": {"phase": "Pending", "observedGeneration": 1}}

    def one(i: int) -> None:
        name = f"raw-{i:05d}"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", server(name, 4, 0))
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "inferenceservers", name, patch)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - started)


def histogram_quantile(text: str, metric: str, quantile: float) -> float | None:
    """A quantile from Prometheus histogram buckets (linear within a bucket), as PromQL does."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{metric}_bucket") and 'kind="InferenceServer"' in line:
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = quantile * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / max(
                count - previous_count, 1e-9
            )
        previous_bound, previous_count = bound, count
    return None


def reconciled(metrics: str) -> float:
    """InferenceServer reconciles finished (status written and children applied)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vram_operator_reconcile_total{") and 'kind="InferenceServer"' in line
    )


def api_requests(api: client.ApiClient) -> dict[str, float]:
    """The API server's request counters, "VERB resource[/subresource]" -> requests served so far."""
    method, url, headers, body, post = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api.call_api(method, url, headers, body, post)
    response.read()
    counts: dict[str, float] = {}
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        pairs = (part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(","))
        labels = {name: value.strip('"') for name, value in pairs}
        subresource = f"/{labels['subresource']}" if labels.get("subresource") else ""
        key = f"{labels['verb']} {labels.get('resource', '')}{subresource}"
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def per_server(before: dict[str, float], after: dict[str, float], servers: int) -> dict[str, float]:
    """Requests per server between two readings of api_requests (the busiest first)."""
    spent = {key: after[key] - before.get(key, 0.0) for key in after}
    return {key: round(n / servers, 2) for key, n in sorted(spent.items(), key=lambda kv: -kv[1]) if n >= servers / 10}


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def placed_count(custom: client.CustomObjectsApi, namespace: str) -> tuple[int, int]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers")["items"]
    decided = placed = 0
    for item in items:
        if item["metadata"]["name"] == WARM_UP:
            continue
        conditions = (item.get("status") or {}).get("conditions", [])
        placed_condition = next((c for c in conditions if c["type"] == "Placed"), None)
        if placed_condition is not None:
            decided += 1
            placed += placed_condition["status"] == "True"
    return decided, placed


def warm_up(custom: client.CustomObjectsApi, timeout: float) -> None:
    """One server decided before the measured ones are created: the operator's start-up (imports,
    listing, indexing) is not counted as their wait."""
    custom.create_namespaced_custom_object(GROUP, VERSION, "bench", "inferenceservers", server(WARM_UP, 4, 0))
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        item = custom.get_namespaced_custom_object(GROUP, VERSION, "bench", "inferenceservers", WARM_UP)
        if any(c["type"] == "Placed" for c in (item.get("status") or {}).get("conditions", [])):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the operator decided no server within {timeout:.0f}s")


class DecisionClock:
    """Watches the servers of a namespace: when each was first seen, and first seen decided (with a
    Placed condition). One watcher sees both, so its own lag cancels out of the difference."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.created: dict[str, float] = {}
        self.decided: dict[str, float] = {}
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(client.CustomObjectsApi(api), namespace), daemon=True)
        self._thread.start()

    def _run(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        try:
            self._watch_servers(custom, namespace)
        except Exception:
            if not self._stopped:  # once stopped, the control plane may go away under the stream
                raise

    def _watch_servers(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        for event in self._watch.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "inferenceservers"
        ):
            item, seen = event["object"], time.perf_counter()
            name = item["metadata"]["name"]
            if name == WARM_UP:
                continue
            self.created.setdefault(name, seen)
            conditions = (item.get("status") or {}).get("conditions", [])
            if any(c["type"] == "Placed" for c in conditions):
                self.decided.setdefault(name, seen)

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()

    def waits(self) -> list[float]:
        return [at - self.created[name] for name, at in self.decided.items()]


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile of `values` (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    nodes = h100_rack(args.nodes)
    with LocalCluster(nodes=nodes, crd_dir=args.crds) as cluster:
        api = admin_client(cluster.kubeconfig)
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        publish_gpu_nodes(custom, nodes)  # LocalCluster already created the nvidia RuntimeClass
        create_namespace(core, "ceiling")
        ceiling = api_ceiling(custom, "ceiling", args.servers, args.workers)

        create_namespace(core, "bench")
        metrics_port = free_port()
        log = Path(tempfile.mkstemp(prefix="operator-scale-", suffix=".log")[1])
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vram_operator.controller",
                "--standalone",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--namespace",
                "bench",
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                "0",
                "--heartbeat-stale-seconds",
                "36000",
                "--check-interval",
                str(args.check_interval),
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            warm_up(custom, args.timeout)  # the operator is up, has listed and indexed: timing starts now
            requests_before = api_requests(api)
            rng = random.Random(args.seed)
            clock = DecisionClock(api, "bench")
            started = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                list(
                    pool.map(
                        lambda i: custom.create_namespaced_custom_object(
                            GROUP,
                            VERSION,
                            "bench",
                            "inferenceservers",
                            server(f"s{i:05d}", rng.choice(BUDGETS_GIB), args.replicas),
                        ),
                        range(args.servers),
                    )
                )
            created = time.perf_counter() - started
            decided = placed = 0
            polls = 0
            while time.perf_counter() - started < args.timeout:
                # The watch counts decisions for free; a LIST of every server (a load on the API
                # server being measured) only now and then, in case the watch missed some.
                if len(clock.decided) >= args.servers or polls % LIST_EVERY == LIST_EVERY - 1:
                    decided, placed = placed_count(custom, "bench")
                    if decided == args.servers:
                        break
                polls += 1
                time.sleep(1)
            polled = time.perf_counter() - started
            metrics = ""
            while time.perf_counter() - started < args.timeout:  # children applied, latency recorded
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                    metrics = response.read().decode()
                if reconciled(metrics) >= args.servers + 1:  # and the warm-up server
                    break
                time.sleep(SCRAPE_EVERY_SECONDS)  # a scrape costs the operator CPU: not every second
            settled = time.perf_counter() - started
            requests = per_server(requests_before, api_requests(api), args.servers)
            clock.stop()
            waits = clock.waits()
            # The last decision as the watch saw it (polling once a second would add up to a second).
            elapsed = max(clock.decided.values(), default=started + polled) - started
            rss = peak_rss_mib(operator.pid)
            cpu = cpu_seconds(operator.pid)
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:  # too busy to stop in time: the figures are taken already
                operator.kill()
                operator.wait()
        api.close()  # type: ignore[no-untyped-call]
    rate = decided / elapsed
    return {
        "servers": args.servers,
        "nodes": args.nodes,
        "gpus": args.nodes * 8,
        "replicas": args.replicas,
        "apiCeilingCreatePlusPatchPerSecond": round(ceiling, 1),
        "createSeconds": round(created, 1),
        "secondsUntilAllDecided": round(elapsed, 1),
        "secondsUntilAllReconciled": round(settled, 1),
        "decided": decided,
        "placed": placed,
        "decisionsPerSecond": round(rate, 1),
        "ratioToCeiling": round(rate / ceiling, 3),
        # Creation to the Placed condition, per server, as a watch sees them (the decision as users see it).
        "decisionP50Seconds": quantile(waits, 0.5),
        "decisionP99Seconds": quantile(waits, 0.99),
        "reconcileP50Seconds": histogram_quantile(metrics, "vram_operator_reconcile_seconds", 0.5),
        "reconcileP99Seconds": histogram_quantile(metrics, "vram_operator_reconcile_seconds", 0.99),
        "operatorPeakRssMiB": round(rss, 1),
        # The operator's own CPU per server (start-up included): what it costs, whatever the machine's load.
        "operatorCpuMillisecondsPerServer": round(cpu * 1000 / args.servers, 1),
        "apiRequestsPerServer": requests,
        "operatorLog": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=250, help="KWOK nodes with 8 H100 80GB each")
    parser.add_argument("--replicas", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8, help="client threads for creates")
    parser.add_argument("--check-interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crds", type=Path, default=DEFAULT_CRD_DIR)
    print(json.dumps(run(parser.parse_args()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
