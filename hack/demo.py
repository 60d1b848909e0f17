#!/usr/bin/env python3
"""The demo: the reference fleet on a local control plane, with simulated node agents and the operator.

    python hack/demo.py            up: cluster, agents, operator, examples/reference-fleet; prints
                                   placements and measured memory, and leaves it running
    python hack/demo.py --down     stop every process it started

The workstation node is a KWOK fake; its agent runs the simulated backend from a profile that the
demo rewrites once the servers' pods run, as if each server had loaded its model (90% of its
budget), so measured memory flows back into the statuses exactly as from NVML.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import LocalCluster, workstation  # noqa: E402
from localcluster.fleet import FakeNode, fake_gpu_uuid  # noqa: E402
from localcluster.process import start  # noqa: E402
from localcluster.resources import admin_client  # noqa: E402

EXAMPLE = ROOT / "examples" / "reference-fleet"
GROUP, VERSION = "vram.dev", "v1alpha1"
PLACED_PHASES = {"Placed", "Running", "Degraded", "Failed"}
# The desktop on GPU 0 of the workstation, as in examples/reference-fleet/gpunode-workstation.yaml.
DESKTOP = [{"pid": 1873, "name": "Xorg", "usedMiB": 356}, {"pid": 2410, "name": "gnome-shell", "usedMiB": 92}]
LOADED_SHARE = 0.9  # a loaded server uses this share of its budget in the demo
WAIT_SECONDS = 180.0


def state_file() -> Path:
    return Path(os.environ.get("VRAM_DEMO_STATE", Path(tempfile.gettempdir()) / f"vram-demo-{os.getuid()}.json"))


def profile(node: FakeNode, loaded: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """A simulated-agent profile of a fake node: its GPUs, the desktop, and the loaded servers."""
    return {
        "driverVersion": "580.95.05",
        "gpus": [
            {
                "name": gpu.product.replace("-", " "),
                "memoryTotalMiB": gpu.memory_mib,
                "uuid": fake_gpu_uuid(node.name, index),
                "computeCapability": "8.6",
                "processes": (DESKTOP if index == 0 else []) + loaded.get(index, []),
            }
            for index, gpu in enumerate(node.gpus)
        ],
    }


def write_profile(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(content, sort_keys=False))
    temporary.replace(path)  # atomic: the agent never reads half a profile


def apply_examples(api: client.ApiClient) -> list[tuple[str, str]]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    servers = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document["kind"] == "GpuNode":
                continue  # the agent reports the node
            try:
                if document["kind"] == "Namespace":
                    core.create_namespace(document)
                elif document["kind"] == "InferenceServer":
                    meta = document["metadata"]
                    custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], "inferenceservers",
                                                           document)  # fmt: skip
                    servers.append((meta["namespace"], meta["name"]))
            except ApiException as error:
                if error.status != 409:
                    raise
    return servers


def server_objects(api: client.ApiClient, servers: list[tuple[str, str]]) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api)
    objects: list[dict[str, Any]] = []
    for namespace, name in servers:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", name)
        objects.append(cast(dict[str, Any], found))
    return objects


def wait_for(what: str, check: Any, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    print(f"warning: gave up waiting for {what} after {timeout:.0f}s", file=sys.stderr)


def loaded_processes(api: client.ApiClient, objects: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """One process per running pod of each placed server, using LOADED_SHARE of its budget."""
    core = client.CoreV1Api(api)
    by_gpu: dict[int, list[dict[str, Any]]] = {}
    pid = 30000
    for obj in objects:
        placement = (obj.get("status") or {}).get("placement") or {}
        if not placement.get("gpus"):
            continue
        meta = obj["metadata"]
        pods = core.list_namespaced_pod(meta["namespace"], label_selector=f"vram.dev/server={meta['name']}").items
        for pod in pods:
            if pod.status is None or pod.status.phase != "Running" or pod.metadata is None:
                continue
            for gpu in placement["gpus"]:
                pid += 1
                by_gpu.setdefault(gpu["index"], []).append(
                    {"pid": pid, "usedMiB": round(placement["budgetMiB"] * LOADED_SHARE),
                     "pod": f"{meta['namespace']}/{pod.metadata.name}", "podUID": pod.metadata.uid,
                     "container": "server"}
                )  # fmt: skip
    return by_gpu


def print_servers(objects: list[dict[str, Any]]) -> None:
    header = f"{'SERVER':<20} {'NODE':<12} {'GPU':<4} {'BUDGET':>10} {'UTIL':>5}  {'PHASE':<9} MEMORY"
    print(header)
    for obj in objects:
        status = obj.get("status") or {}
        placement = status.get("placement") or {}
        util = status.get("gpuMemoryUtilization")
        print(
            f"{obj['metadata']['namespace'] + '/' + obj['metadata']['name']:<20} {placement.get('node', '-'):<12} "
            f"{placement.get('gpuSummary', '-'):<4} {placement.get('budgetMiB', 0):>8.0f}Mi "
            f"{'-' if util is None else f'{util:.2f}':>5}  {status.get('phase', '-'):<9} "
            f"{(status.get('memory') or {}).get('display', '-')}"
        )
        for warning in status.get("warnings", []):
            print(f"    warning: {warning}")


def up() -> int:
    existing = state_file()
    if existing.exists():
        print(f"the demo is already up: export KUBECONFIG={json.loads(existing.read_text())['kubeconfig']}")
        print("(stop it with: bash hack/demo.sh --down)")
        return 0
    started = time.monotonic()
    node = workstation()
    cluster = LocalCluster(nodes=[node]).up()
    work = cluster.workdir
    assert work is not None
    kubeconfig = str(cluster.kubeconfig)
    profile_path = work / f"agent-{node.name}.yaml"
    write_profile(profile_path, profile(node, {}))
    cli = [sys.executable, "-m", "vram_operator.cli"]
    components = [
        start(f"agent-{node.name}", [*cli, "agent", "--backend", "simulated", "--profile", str(profile_path),
                                     "--node-name", node.name, "--kubeconfig", kubeconfig, "--interval", "2",
                                     "--metrics-port", "0"], work),
        # the workstation mounts its model directory from the host (ai-llm): a trusted single-user setup
        start("operator", [*cli, "run", "--standalone", "--allow-host-access", "--kubeconfig", kubeconfig], work),
    ]  # fmt: skip
    cluster.components.extend(components)
    cluster.write_state(state_file())
    api = admin_client(cluster.kubeconfig)
    servers = apply_examples(api)
    wait_for("placements", lambda: all(
        (o.get("status") or {}).get("phase") in PLACED_PHASES for o in server_objects(api, servers)))  # fmt: skip
    wait_for("pods", lambda: bool(loaded_processes(api, server_objects(api, servers))), timeout=60)
    write_profile(profile_path, profile(node, loaded_processes(api, server_objects(api, servers))))
    wait_for("measured memory", lambda: all(
        (o.get("status") or {}).get("memory") for o in server_objects(api, servers)
        if ((o.get("status") or {}).get("placement") or {}).get("gpus")), timeout=120)  # fmt: skip
    print_servers(server_objects(api, servers))
    print(f"\nup in {time.monotonic() - started:.0f}s; logs in {work}")
    print(f"export KUBECONFIG={kubeconfig}")
    print("kubectl get infs -A; kubectl get gpunodes   |   stop: bash hack/demo.sh --down")
    return 0


def down() -> int:
    path = state_file()
    if not path.exists():
        print("the demo is not up")
        return 0
    LocalCluster.from_state(json.loads(path.read_text())).down()
    path.unlink()
    print("stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", action="store_true", help="stop everything the demo started")
    args = parser.parse_args()
    return down() if args.down else up()


if __name__ == "__main__":
    sys.exit(main())
