#!/usr/bin/env python3
"""The demo: two GPU machines on a local control plane, with the simulated GPU runtime and the operator.

    python hack/demo.py            up: cluster, simulated runtime, operator; the workstation of
                                   examples/reference-fleet, then the desktop of examples/shared-12gb;
                                   prints `kubectl get infs -A` and why, and leaves it running
    python hack/demo.py --down     stop every process it started

Real: the control plane (kube-apiserver, etcd, controller-manager, scheduler) and the operator: every
placement, budget, computed utilization, warning and refusal printed is the operator's decision.
Simulated: the nodes (KWOK), their GPUs, the processes outside Kubernetes on them (a desktop, a
Whisper and a TTS service) and the engines in their pods (`vram-operator simulate`): each pod bound
there starts its engine on the GPUs it is pinned to, takes the memory the sizing model says (give or
take a seeded error) and prints the engine's start-up lines, or crashes with the engine's own message
and restarts with back-off; the GpuNode status is written as the node agent would write it. Any
server applied later is placed, started and measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

from localcluster import FakeNode, LocalCluster, binary_path, desktop, workstation  # noqa: E402
from localcluster.fleet import node_manifest  # noqa: E402
from localcluster.process import start  # noqa: E402
from localcluster.resources import admin_client, create_nodes, wait_nodes_ready  # noqa: E402

EXAMPLE = ROOT / "examples" / "reference-fleet"
# The desktop of the production report: a 12 GB card shared with services outside Kubernetes.
SHARED_CARD = ROOT / "examples" / "shared-12gb"
GROUP, VERSION = "vram.dev", "v1alpha1"
PLACED_PHASES = {"Placed", "Running", "Degraded", "Failed"}
# The desktop on GPU 0 of the workstation, as in examples/reference-fleet/gpunode-workstation.yaml.
DESKTOP = [{"pid": 1873, "name": "Xorg", "usedMiB": 356}, {"pid": 2410, "name": "gnome-shell", "usedMiB": 92}]
WAIT_SECONDS = 180.0
NODE_READY_SECONDS = 60.0
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
            "placement": {"node": "workstation", "gpus": [1]},
        },
    },
}
# On the desktop: a small assistant whose utilization is left to the operator, beside the production
# report's chat server set by hand to 0.40 "to leave room for the other services" (too low: vLLM would
# stop with "No available memory for the cache blocks").
ASSISTANT: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "InferenceServer",
    "metadata": {"name": "assistant", "namespace": "default"},
    "spec": {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.10.1.1",
        "engineVersion": "0.10.1",
        "model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"},
        "maxModelLen": 4096,
        "maxNumSeqs": 4,  # a few users at a time
    },
}
MANUAL_TOO_LOW = SHARED_CARD / "server-manual-0.40.yaml"
TRY = """\
Try (each server is placed, started by the simulated runtime and measured):
  kubectl apply -f {work}/try-detector.yaml      # a 128Mi service: goes where most memory is free
  kubectl -n ai delete infs ai-enrichment ai-florence   # frees the A400, then:
  kubectl apply -f {work}/try-qwen.yaml           # vLLM at utilization 0.45 on the A400: the model needs
                                                  # a little more than predicted, vLLM crash-loops with its
                                                  # own message, the operator raises the utilization
  kubectl -n ai get infs,pods -w; kubectl -n ai describe infs qwen
  kubectl describe infs chat-manual-040           # the refusal: its Placed condition and a Warning event"""
SIMULATED = """\
Simulated here: the nodes "workstation" (KWOK; an RTX A5500 and an RTX A400) and "desktop" (KWOK; a
GeForce RTX 3060 12 GB), the processes outside Kubernetes on their GPUs (Xorg and gnome-shell on the
A5500; Xorg, whisper-server and piper-tts, {foreign:.0f}MiB, on the RTX 3060), and the engines in their
pods with the start-up lines they print (vram-operator simulate): vLLM, llama.cpp and generic servers
start on the GPUs their pod is pinned to, take what the sizing model says give or take a seeded
error, or crash-loop with the engine's own message.
Real: the control plane and the operator. Every placement, budget, utilization, warning and refusal
above is the operator's decision, from what the (simulated) node agents report.
Faults (foreign processes, lost GPU, agent stall) can be changed live in {faults}."""


def state_file() -> Path:
    return Path(os.environ.get("VRAM_DEMO_STATE", Path(tempfile.gettempdir()) / f"vram-demo-{os.getuid()}.json"))


def write_faults(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(content, sort_keys=False))
    temporary.replace(path)  # atomic: the runtime never reads half a file


def example_documents(path: Path) -> list[dict[str, Any]]:
    """The objects of an example file or folder, without its GpuNodes (the agents report the nodes)."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    found = [document for file in files for document in yaml.safe_load_all(file.read_text())]
    return [document for document in found if document and document["kind"] != "GpuNode"]


def shared_card_processes() -> list[dict[str, Any]]:
    """The processes outside Kubernetes on the desktop's card, as its agent reports them in the example."""
    reported = yaml.safe_load((SHARED_CARD / "gpunode.yaml").read_text())
    return list(reported["status"]["gpus"][0]["processes"])


def apply_in_order(api: client.ApiClient, documents: list[dict[str, Any]]) -> list[tuple[str, str]]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    servers = []
    for document in documents:
        try:
            meta = document["metadata"]
            if document["kind"] == "Namespace":
                labels = meta.get("labels")
                core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=meta["name"], labels=labels))
                )
            elif document["kind"] == "InferenceServer":
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


def join(api: client.ApiClient, node: FakeNode) -> None:
    """A node joins the running cluster (KWOK makes it Ready; the simulated agent reports its GPUs)."""
    create_nodes(api, [node_manifest(node)])
    wait_nodes_ready(api, [node.name], NODE_READY_SECONDS)
    wait_for(f"the GPUs of {node.name}", lambda: reported_gpus(api, node.name))


def decided(api: client.ApiClient, namespace: str, name: str) -> bool:
    """The operator has placed the server or said why not (a Placed condition)."""
    found = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", name
    )
    return placed_condition(cast(dict[str, Any], found)) is not None


def placed_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Placed"), None)


def settled(obj: dict[str, Any]) -> bool:
    """Placed and past Pending, or refused with a reason."""
    placed = placed_condition(obj)
    if placed is not None and placed.get("status") == "False":
        return True
    return (obj.get("status") or {}).get("phase") in PLACED_PHASES


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


def kubectl(binary: Path, kubeconfig: str, *args: str) -> None:
    """Print a kubectl command and what the real kubectl (built with the control plane) shows."""
    shown = subprocess.run([str(binary), "--kubeconfig", kubeconfig, *args],
                           capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    print(f"$ kubectl {' '.join(args)}")
    print(shown.stdout.rstrip() or shown.stderr.rstrip())


def print_why(objects: list[dict[str, Any]]) -> None:
    """Per server, from its status: where and how much, the utilization and why, refusals, warnings."""
    print("\nWhy (from each server's status):")
    for obj in objects:
        status = obj.get("status") or {}
        placement = status.get("placement") or {}
        line = f"  {obj['metadata']['namespace']}/{obj['metadata']['name']}:"
        manual = obj["spec"].get("gpuMemoryUtilization")  # 0 or absent: auto
        if manual:
            line += f" gpuMemoryUtilization {manual} set by hand;"
        placed = placed_condition(obj) or {}
        if placed.get("status") == "False":
            estimate = status.get("estimate") or {}
            print(f"{line} not placed, {placed.get('reason')}: {placed.get('message')}")
            print(f"    estimate: {estimate.get('kvCacheTokens')} KV cache tokens at {manual}; the smallest "
                  f"utilization that starts is {estimate.get('minUtilization')}")  # fmt: skip
        else:
            line += f" reserves {placement.get('budgetMiB', 0):.0f}MiB on {placement.get('node')} GPU "
            print(line + str(placement.get("gpuSummary")))
        if status.get("utilizationMode") == "auto":
            print(f"    --gpu-memory-utilization {status.get('gpuMemoryUtilization'):.2f}, computed:")
            for step in status.get("utilizationExplanation") or []:
                print(f"      {step}")
        for warning in status.get("warnings", []):
            print(f"    warning: {warning}")


def up() -> int:
    existing = state_file()
    if existing.exists():
        print(f"the demo is already up: export KUBECONFIG={json.loads(existing.read_text())['kubeconfig']}")
        print("(stop it with: bash hack/demo.sh --down)")
        return 0
    started = time.monotonic()
    kubectl_binary = binary_path("kubectl")  # built with the control plane; missing: fail before starting
    node, joining = workstation(), desktop()
    cluster = LocalCluster(nodes=[node]).up()
    work = cluster.workdir
    assert work is not None
    kubeconfig = str(cluster.kubeconfig)
    faults = work / "faults.yaml"
    outside = shared_card_processes()
    write_faults(faults, {"nodes": {node.name: {"gpus": {0: {"processes": DESKTOP}}},
                                    joining.name: {"gpus": {0: {"processes": outside}}}}})  # fmt: skip
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
    servers = apply_in_order(api, example_documents(EXAMPLE))
    # The desktop joins once the workstation's servers are decided: with its free card there first,
    # the workstation's small services would land on it.
    join(api, joining)
    servers += apply_in_order(api, [ASSISTANT, *example_documents(MANUAL_TOO_LOW)])
    wait_for("placements", lambda: all(settled(o) for o in server_objects(api, servers)))
    wait_for("measured memory", lambda: all(
        (o.get("status") or {}).get("memory") for o in server_objects(api, servers)
        if ((o.get("status") or {}).get("placement") or {}).get("gpus")), timeout=120)  # fmt: skip
    kubectl(kubectl_binary, kubeconfig, "get", "infs", "-A")
    print_why(server_objects(api, servers))
    assistant = ASSISTANT["metadata"]
    print(f"\nThe start-up lines of {assistant['name']}'s (simulated) vLLM; the operator reads them into its status:")
    kubectl(kubectl_binary, kubeconfig, "-n", assistant["namespace"], "logs", f"deploy/{assistant['name']}")
    for name, manifest in TRY_LATER.items():
        (work / f"try-{name}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    foreign = sum(float(process["usedMiB"]) for process in outside)
    print("\n" + SIMULATED.format(faults=faults, foreign=foreign))
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
