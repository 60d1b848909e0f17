#!/usr/bin/env python3
"""The demo: the reference fleet on a local control plane, with the simulated GPU runtime and the operator.

    python hack/demo.py            up: cluster, simulated runtime, operator, examples/reference-fleet;
                                   prints placements and measured memory, and leaves it running
    python hack/demo.py --down     stop every process it started

Real: the control plane (kube-apiserver, etcd, controller-manager, scheduler) and the operator.
Simulated: the workstation node (KWOK), its GPUs and the engines in its pods (`vram-operator
simulate`): each pod bound there starts its engine on the GPUs it is pinned to, takes the memory the
sizing model says (give or take a seeded error), or crashes with the engine's own message and
restarts with back-off; the GpuNode status is written as the node agent would write it. Any server
applied later is placed, started and measured the same way.
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
from localcluster.process import start  # noqa: E402
from localcluster.resources import admin_client  # noqa: E402

EXAMPLE = ROOT / "examples" / "reference-fleet"
GROUP, VERSION = "vram.dev", "v1alpha1"
PLACED_PHASES = {"Placed", "Running", "Degraded", "Failed"}
# The desktop on GPU 0 of the workstation, as in examples/reference-fleet/gpunode-workstation.yaml.
DESKTOP = [{"pid": 1873, "name": "Xorg", "usedMiB": 356}, {"pid": 2410, "name": "gnome-shell", "usedMiB": 92}]
WAIT_SECONDS = 180.0
# The simulated runtime's seed: under it Qwen2.5-0.5B really needs a little more than the sizing
# model predicts, which the "try" below shows (vLLM crash-loops at the predicted minimum).
SEED = 5
TRY_LATER: dict[str, dict[str, Any]] = {
    "detector": {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": "detector", "namespace": "ai"},
        "spec": {"engine": "generic", "image": "registry.example.com/ai/detector:1", "vramBudget": "128Mi"},
    },
    "qwen": {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": "qwen", "namespace": "ai"},
        "spec": {
            "engine": "vllm",
            "image": "vllm/vllm-openai:v0.19.0",
            "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
            "maxModelLen": 4096,
            "gpuMemoryUtilization": 0.45,  # the predicted minimum on the A400
            # No CUDA graphs on the 4 GB card: vLLM 0.19 would capture ~0.7 GiB of them beyond its share.
            "args": ["--enforce-eager"],
            "placement": {"node": "workstation", "gpus": [1]},
        },
    },
}
TRY = """\
Try (each server is placed, started by the simulated runtime and measured):
  kubectl apply -f {work}/try-detector.yaml      # a 128Mi service: fits the A5500's leftover
  kubectl -n ai delete infs ai-enrichment ai-florence   # frees the A400, then:
  kubectl apply -f {work}/try-qwen.yaml           # vLLM at utilization 0.45 on the A400: the model needs
                                                  # a little more than predicted, vLLM crash-loops with its
                                                  # own message, the operator raises the utilization
  kubectl -n ai get infs,pods -w; kubectl -n ai describe infs qwen"""
SIMULATED = """\
Simulated here: the node "workstation" (KWOK) with an RTX A5500 and an RTX A400, and the engines in
its pods (vram-operator simulate): vLLM, llama.cpp and generic servers start on the GPUs their pod is
pinned to, take what the sizing model says give or take a seeded error, or crash-loop with the
engine's own message. Real: the control plane and the operator.
Faults (foreign processes, lost GPU, agent stall) can be changed live in {faults}."""


def state_file() -> Path:
    return Path(os.environ.get("VRAM_DEMO_STATE", Path(tempfile.gettempdir()) / f"vram-demo-{os.getuid()}.json"))


def write_faults(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(content, sort_keys=False))
    temporary.replace(path)  # atomic: the runtime never reads half a file


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
                    # One at a time, each decided before the next: the fleet is packed tight and the
                    # operator places first come, first served, so the order is the demo's, not the load's.
                    namespace, name = meta["namespace"], meta["name"]
                    wait_for(f"{name} decided", lambda ns=namespace, n=name: decided(api, ns, n), 60)
            except ApiException as error:
                if error.status != 409:
                    raise
    return servers


def decided(api: client.ApiClient, namespace: str, name: str) -> bool:
    """The operator has placed the server or said why not (a Placed condition)."""
    found = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", name
    )
    conditions = (cast(dict[str, Any], found).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Placed" for c in conditions)


def reported_gpus(api: client.ApiClient, node: str) -> bool:
    try:
        found = client.CustomObjectsApi(api).get_cluster_custom_object(GROUP, VERSION, "gpunodes", node)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return bool((cast(dict[str, Any], found).get("status") or {}).get("gpus"))


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
    faults = work / "faults.yaml"
    write_faults(faults, {"nodes": {node.name: {"gpus": {0: {"processes": DESKTOP}}}}})
    cli = [sys.executable, "-m", "vram_operator.cli"]
    engine_logs = work / "engine-logs"  # the engines' start-up logs, served as their pods' logs
    engine_logs.mkdir()
    components = [
        start("simulate", [*cli, "simulate", "--kubeconfig", kubeconfig, "--faults", str(faults),
                           "--state-file", str(work / "simulated-gpus.json"), "--seed", str(SEED),
                           "--logs-dir", str(engine_logs)], work),
        # the workstation mounts its model directory from the host (ai-llm): a trusted single-user setup
        start("operator", [*cli, "run", "--standalone", "--allow-host-access", "--kubeconfig", kubeconfig], work),
    ]  # fmt: skip
    cluster.components.extend(components)
    cluster.write_state(state_file())
    api = admin_client(cluster.kubeconfig)
    # The servers go in once the node's GPUs are reported: servers that wait for GPU data are all
    # decided when it arrives, in no fixed order, and this fleet is packed tight (first come, first placed).
    wait_for(f"the GPUs of {node.name}", lambda: reported_gpus(api, node.name))
    servers = apply_examples(api)
    wait_for("placements", lambda: all(
        (o.get("status") or {}).get("phase") in PLACED_PHASES for o in server_objects(api, servers)))  # fmt: skip
    wait_for("measured memory", lambda: all(
        (o.get("status") or {}).get("memory") for o in server_objects(api, servers)
        if ((o.get("status") or {}).get("placement") or {}).get("gpus")), timeout=120)  # fmt: skip
    print_servers(server_objects(api, servers))
    for name, manifest in TRY_LATER.items():
        (work / f"try-{name}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    print("\n" + SIMULATED.format(faults=faults))
    print("\n" + TRY.format(work=work))
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
