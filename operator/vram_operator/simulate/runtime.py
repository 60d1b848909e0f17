"""The simulated GPU runtime's I/O edge: reads fake nodes, their pods and the faults file; writes pod
statuses (crashes), GpuNode statuses (through the agent's own status builder and reporter) and the
state file. One `Twin` serves every fake node of the cluster; `tick()` is one pass.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vram_operator import __version__
from vram_operator.agent.poller import rfc3339
from vram_operator.agent.reporter import GpuNodeReporter
from vram_operator.agent.simulated import profile_snapshot
from vram_operator.agent.status import build_status
from vram_operator.api.base import GROUP, VERSION
from vram_operator.api.gpu_node import GpuNodeStatus
from vram_operator.api.inference_server import InferenceServer
from vram_operator.decide import config_for
from vram_operator.errors import InputError
from vram_operator.render.pinning import GPU_UUID_ANNOTATION
from vram_operator.simulate.engines import Launch, Perturbation
from vram_operator.simulate.faults import Faults, parse_faults
from vram_operator.simulate.world import (
    FAKE_GPUS_ANNOTATION,
    FAKE_NODE_LABEL,
    Backoff,
    FakeNode,
    PodView,
    World,
    parse_fake_gpus,
    pod_status,
    pod_view,
)
from vram_operator.sizing.errors import SizingError

log = logging.getLogger(__name__)


class FaultsFile:
    """The faults file, re-read when its modification time changes; a bad edit keeps the last good one."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._mtime_ns: int | None = None
        self._faults = Faults()

    def check(self) -> None:
        """Refuse a faults file that exists but is not valid (at start-up: a configuration error)."""
        if self._path is not None and self._path.exists():
            parse_faults(self._path.read_text(), source=str(self._path))

    def current(self) -> Faults:
        if self._path is None:
            return self._faults
        try:
            stat = self._path.stat()
            if stat.st_mtime_ns != self._mtime_ns:
                self._faults = parse_faults(self._path.read_text(), source=str(self._path))
                self._mtime_ns = stat.st_mtime_ns
                log.info("faults %s loaded", self._path)
        except FileNotFoundError:
            self._faults, self._mtime_ns = Faults(), None
        except (OSError, InputError) as error:
            log.warning("keeping the previous faults: %s", error)
        return self._faults


@dataclass(frozen=True)
class TwinSettings:
    seed: int = 0
    perturbation: Perturbation = field(default_factory=Perturbation)
    backoff: Backoff = field(default_factory=Backoff)
    heartbeat_s: float = 30.0
    faults_path: Path | None = None
    state_path: Path | None = None
    # Engines' start-up logs are written here and served as their pods' logs through KWOK `Logs` objects.
    logs_dir: Path | None = None


# KWOK's Logs kind: pods/log of a pod on a KWOK node is read from the file its Logs object names.
KWOK_GROUP, KWOK_VERSION, KWOK_LOGS = "kwok.x-k8s.io", "v1alpha1", "logs"


def _status_code(error: Exception) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


class Twin:
    """Plays the engines of the pods on every fake GPU node; `tick()` once per interval."""

    def __init__(
        self,
        core: Any,
        custom: Any,
        settings: TwinSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._core = core
        self._custom = custom
        self._settings = settings
        self._clock = clock
        self._wall = wall
        self._faults = FaultsFile(settings.faults_path)
        self.world = World(perturbation=settings.perturbation, backoff=settings.backoff)
        self._nodes: dict[str, FakeNode] = {}
        self._manifests: dict[str, dict[str, Any]] = {}  # nodes deleted by a `gone` fault, to restore
        self._reporters: dict[str, GpuNodeReporter] = {}
        self._previous: dict[str, GpuNodeStatus] = {}
        self._ticks = 0
        self._logged: dict[str, str] = {}  # pod UID -> the start (started_at) whose log is published

    def tick(self) -> None:
        faults = self._faults.current()
        stamp = rfc3339(self._wall())
        self._ticks += 1
        self._read_nodes(faults)
        pods = self._read_pods()
        changed = self.world.step(
            list(self._nodes.values()), pods, self._launches(pods, faults), faults, now=self._clock(), stamp=stamp
        )
        for state in changed:
            self._patch_pod(state.pod, pod_status(state, stamp=stamp))
        self._publish_logs()
        for node in self._nodes.values():
            node_faults = faults.node(node.name)
            if not (node_faults.gone or node_faults.agent_stalled):
                self._report(node, faults, stamp)
        if self._settings.state_path is not None:
            truth = self.world.state(
                list(self._nodes.values()), faults, seed=self._settings.seed, tick=self._ticks, stamp=stamp
            )
            temporary = self._settings.state_path.with_suffix(".tmp")
            temporary.write_text(json.dumps(truth, indent=1, sort_keys=True))
            temporary.replace(self._settings.state_path)

    def close(self) -> None:
        """Give back the nodes a `gone` fault deleted: the cluster outlives the simulation."""
        for name, manifest in list(self._manifests.items()):
            try:
                self._core.create_node(manifest)
            except Exception as error:
                if _status_code(error) != 409:
                    log.warning("cannot restore node %s: %s", name, error)
            del self._manifests[name]

    # --- reading -------------------------------------------------------------------------------

    def _read_nodes(self, faults: Faults) -> None:
        listed = self._core.list_node(label_selector=f"{FAKE_NODE_LABEL}=true").items
        present = set()
        for node in listed:
            meta = node.metadata
            present.add(meta.name)
            annotation = (meta.annotations or {}).get(FAKE_GPUS_ANNOTATION)
            if annotation and meta.name not in self._nodes:
                self._nodes[meta.name] = parse_fake_gpus(meta.name, annotation)
            if faults.node(meta.name).gone:
                self._remove_node(node)
        for name, manifest in list(self._manifests.items()):
            if not faults.node(name).gone and name not in present:
                self._core.create_node(manifest)
                del self._manifests[name]
                log.info("node %s is back", name)

    def _remove_node(self, node: Any) -> None:
        name = node.metadata.name
        manifest = self._core.api_client.sanitize_for_serialization(node)
        metadata = manifest.get("metadata", {})
        manifest["metadata"] = {k: metadata[k] for k in ("name", "labels", "annotations") if k in metadata}
        status = manifest.get("status") or {}
        manifest["status"] = {k: status[k] for k in ("capacity", "allocatable") if k in status}
        self._manifests[name] = manifest
        try:
            self._core.delete_node(name)
            log.info("node %s is gone (fault)", name)
        except Exception as error:
            if _status_code(error) != 404:
                raise

    def _read_pods(self) -> list[PodView]:
        found = self._core.list_pod_for_all_namespaces().items
        views = []
        for pod in found:
            if pod.spec is None or pod.spec.node_name not in self._nodes:
                continue
            raw = self._core.api_client.sanitize_for_serialization(pod)
            views.append(pod_view(raw, self._claim_uuids(raw)))
        return views

    def _claim_uuids(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """GPU UUIDs of the ResourceClaims a pod references (dra pinning), by claim name."""
        uuids = {}
        namespace = pod["metadata"]["namespace"]
        for reference in (pod.get("spec") or {}).get("resourceClaims") or []:
            name = reference.get("resourceClaimName")
            if not name:
                continue
            try:
                claim = self._custom.get_namespaced_custom_object(
                    "resource.k8s.io", "v1", namespace, "resourceclaims", name
                )
            except Exception as error:
                if _status_code(error) == 404:
                    continue
                raise
            uuid = ((claim.get("metadata") or {}).get("annotations") or {}).get(GPU_UUID_ANNOTATION)
            if uuid:
                uuids[name] = uuid
        return uuids

    def _launches(self, pods: list[PodView], faults: Faults) -> dict[str, Launch]:
        servers = self._servers() if any(p.running and p.server for p in pods) else {}
        launches = {}
        for pod in pods:
            server = servers.get((pod.namespace, pod.server or ""))
            if not pod.running or server is None:
                continue
            try:
                config = config_for(server, self._config_maps(server))
            except SizingError as error:
                log.warning("%s/%s: %s", pod.namespace, pod.server, error)
                continue
            truth = faults.servers.get(f"{pod.namespace}/{pod.server}")
            launches[pod.uid] = Launch(
                engine=server.spec.engine,
                args=pod.args,
                env=pod.env,
                spec=server.spec,
                config=config,
                true_footprint_mib=truth.true_footprint_mib if truth else None,
            )
        return launches

    def _servers(self) -> dict[tuple[str, str], InferenceServer]:
        """Every InferenceServer, by namespace and name (one list call per pass)."""
        listed = self._custom.list_cluster_custom_object(GROUP, VERSION, "inferenceservers")
        servers = {}
        for raw in listed.get("items", []):
            try:
                server = InferenceServer.model_validate(raw)
            except ValueError as error:  # the API server admitted something the model refuses: skip it
                log.warning("skipping InferenceServer %s: %s", (raw.get("metadata") or {}).get("name"), error)
                continue
            servers[(server.metadata.namespace or "default", server.metadata.name)] = server
        return servers

    def _config_maps(self, server: InferenceServer) -> dict[tuple[str, str], dict[str, str]]:
        ref = server.spec.model.config_map_ref if server.spec.model else None
        if ref is None:
            return {}
        namespace = server.metadata.namespace or "default"
        try:
            found = self._core.read_namespaced_config_map(ref.name, namespace)
        except Exception as error:
            if _status_code(error) == 404:
                return {}
            raise
        return {(namespace, ref.name): dict(found.data or {})}

    # --- writing -------------------------------------------------------------------------------

    def _patch_pod(self, pod: PodView, body: dict[str, Any]) -> None:
        try:
            self._core.patch_namespaced_pod_status(pod.name, pod.namespace, body)
        except Exception as error:
            if _status_code(error) != 404:  # the pod went meanwhile
                log.warning("cannot patch pod %s/%s status: %s", pod.namespace, pod.name, error)

    def _publish_logs(self) -> None:
        """Each engine start's log, once: a file in the CRI log format and a KWOK Logs object naming it."""
        logs_dir = self._settings.logs_dir
        if logs_dir is None:
            return
        self._logged = {uid: started for uid, started in self._logged.items() if uid in self.world.engines}
        for uid, state in self.world.engines.items():
            if not state.run.log or self._logged.get(uid) == state.started_at:
                continue
            path = logs_dir / f"{uid}.log"
            stamp = state.started_at or rfc3339(self._wall())
            path.write_text("".join(f"{stamp} stdout F {line}\n" for line in state.run.log.splitlines()))
            body = {
                "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}",
                "kind": "Logs",
                "metadata": {"name": state.pod.name, "namespace": state.pod.namespace},
                "spec": {"logs": [{"containers": [], "logsFile": str(path)}]},
            }
            try:
                self._custom.create_namespaced_custom_object(
                    KWOK_GROUP, KWOK_VERSION, state.pod.namespace, KWOK_LOGS, body
                )
            except Exception as error:
                if _status_code(error) != 409:  # 404: KWOK's Logs kind is not installed: no logs served
                    log.warning("cannot publish the log of pod %s/%s: %s", state.pod.namespace, state.pod.name, error)
                    continue
            self._logged[uid] = state.started_at

    def _report(self, node: FakeNode, faults: Faults, stamp: str) -> None:
        reporter = self._reporters.get(node.name)
        if reporter is None:
            reporter = GpuNodeReporter(self._custom, node.name, heartbeat_s=self._settings.heartbeat_s)
            self._reporters[node.name] = reporter
        snapshot = profile_snapshot(self.world.profile(node, faults), node.name)
        status = build_status(
            snapshot, {}, {}, now=stamp, agent_version=__version__, previous=self._previous.get(node.name)
        )
        self._previous[node.name] = status
        reporter.report(status)
