"""Bring a real control plane up on loopback (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK) with fake GPU nodes, and take it down again by PID."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from localcluster import fleet, kwok_logs, process, resources
from localcluster.kubeconfig import write_kubeconfig
from localcluster.kwok_config import KWOK_CONFIG
from localcluster.pki import CertificateAuthority, write_service_account_keys
from localcluster.tools import control_plane_binaries

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CRD_DIR = REPO_ROOT / "crds"
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the kubernetes.default Service
UNPRIVILEGED_USER = "vram-test-unprivileged"
READY_TIMEOUT_SECONDS = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _insecure_context() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with a self-signed certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class LocalCluster:
    """A local control plane. `up()` starts it, `down()` stops every process and removes the
    working directory. Also a context manager."""

    nodes: Sequence[fleet.FakeNode] = field(default_factory=fleet.reference_fleet)
    crd_dir: Path | None = DEFAULT_CRD_DIR
    workdir: Path | None = None
    components: list[process.Component] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        """Admin (system:masters) kubeconfig."""
        return self._require_workdir() / "admin.kubeconfig"

    @property
    def unprivileged_kubeconfig(self) -> Path:
        """Kubeconfig of an authenticated user that no RBAC rule grants anything."""
        return self._require_workdir() / "unprivileged.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['apiserver']}"

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise process.ComponentError("the cluster is not up")
        return self.workdir

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Self:
        binaries = control_plane_binaries()  # fail before creating anything if a tool is missing
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="vram-localcluster-"))
        try:
            self._start_all(binaries)
            self._mark("control plane ready", started)
            api = resources.admin_client(self.kubeconfig)
            try:
                if self.crd_dir is not None:
                    resources.install_crds(api, self.crd_dir)
                    self._mark("CRDs established", started)
                resources.create_nodes(api, [fleet.node_manifest(node) for node in self.nodes])
                resources.apply_manifest(api, fleet.NVIDIA_RUNTIME_CLASS, "fake GPU fleet")
                resources.wait_nodes_ready(api, [node.name for node in self.nodes], READY_TIMEOUT_SECONDS)
                resources.wait_service_account(api, "default", READY_TIMEOUT_SECONDS)
            finally:
                api.close()  # type: ignore[no-untyped-call]
            self._mark("up", started)
        except BaseException as error:
            report = self.failure_report()
            self.down()
            if isinstance(error, Exception):
                raise process.ComponentError(f"{error}\n{report}") from error
            raise
        return self

    def _mark(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 2)

    def _start_all(self, binaries: dict[str, Path]) -> None:
        work = self._require_workdir()
        pki_dir = work / "pki"
        pki_dir.mkdir()
        ca = CertificateAuthority(pki_dir)
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
            self.ports[name] = free_port()
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=(LOOPBACK, SERVICE_IP),
            server=True,
        )
        sa_keys = write_service_account_keys(pki_dir)
        # The aggregation layer's own CA: without it the controllers log errors about the
        # missing requestheader bundle, and aggregated APIs (metrics.k8s.io) cannot be served.
        front_proxy_dir = pki_dir / "front-proxy"
        front_proxy_dir.mkdir()
        front_proxy_ca = CertificateAuthority(front_proxy_dir)
        front_proxy = front_proxy_ca.issue("front-proxy-client", "front-proxy-client")
        users = {
            "admin": ("admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": ("kwok-controller", ("system:masters",)),
            "unprivileged": (UNPRIVILEGED_USER, ()),
        }
        kubeconfigs = {
            name: write_kubeconfig(
                work / f"{name}.kubeconfig",
                server=self.server,
                ca_cert=ca.pair.cert_path,
                user=user,
                client=ca.issue(f"client-{name}", user, organizations=groups),
            )
            for name, (user, groups) in users.items()
        }

        etcd_url = f"http://{LOOPBACK}:{self.ports['etcd']}"
        peer_url = f"http://{LOOPBACK}:{self.ports['etcd-peer']}"
        etcd = self._start(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=local",
                f"--data-dir={work / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                "--unsafe-no-fsync=true",  # throw-away data: no need to pay for fsync
                "--log-level=warn",
            ],
        )
        process.wait_http_ok(etcd, f"{etcd_url}/health", timeout_seconds=READY_TIMEOUT_SECONDS, expect="true")

        apiserver = self._start(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={work / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert_path}",
                f"--tls-private-key-file={serving.key_path}",
                f"--client-ca-file={ca.pair.cert_path}",
                f"--service-account-key-file={sa_keys.cert_path}",
                f"--service-account-signing-key-file={sa_keys.key_path}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--runtime-config=resource.k8s.io/v1=true",
                f"--requestheader-client-ca-file={front_proxy_ca.pair.cert_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy.cert_path}",
                f"--proxy-client-key-file={front_proxy.key_path}",
                "--allow-privileged=true",
                # a loopback address is not a valid Endpoints address; nothing in-cluster needs it
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                # KWOK serves pods/log at the node's InternalIP (loopback), as a kubelet would
                "--kubelet-preferred-address-types=InternalIP",
            ],
        )
        context = ssl.create_default_context(cafile=str(ca.pair.cert_path))
        admin_pair = ca.issue("client-readyz", "admin", organizations=("system:masters",))
        context.load_cert_chain(str(admin_pair.cert_path), str(admin_pair.key_path))
        process.wait_http_ok(
            apiserver, f"{self.server}/readyz", timeout_seconds=READY_TIMEOUT_SECONDS, ssl_context=context
        )

        cm_kubeconfig = kubeconfigs["controller-manager"]
        controller_manager = self._start(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={work / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa_keys.key_path}",
                f"--root-ca-file={ca.pair.cert_path}",
                f"--cluster-signing-cert-file={ca.pair.cert_path}",
                f"--cluster-signing-key-file={ca.pair.key_path}",
                "--cluster-name=vram-local",
            ],
        )
        scheduler_config = work / "scheduler.yaml"
        scheduler_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfigs["scheduler"])},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        scheduler = self._start(
            "kube-scheduler",
            [
                str(binaries["kube-scheduler"]),
                f"--config={scheduler_config}",
                f"--authentication-kubeconfig={kubeconfigs['scheduler']}",
                f"--authorization-kubeconfig={kubeconfigs['scheduler']}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={work / 'scheduler-certs'}",
            ],
        )
        api = resources.admin_client(kubeconfigs["admin"])
        try:  # before KWOK starts, so that it finds the kind of its Logs objects
            resources.apply_manifest(api, kwok_logs.LOGS_CRD, "KWOK Logs")
            resources.wait_crd_established(api, kwok_logs.LOGS_CRD_NAME, READY_TIMEOUT_SECONDS)
        finally:
            api.close()  # type: ignore[no-untyped-call]
        kwok_serving = ca.issue("kwok", "kwok", ip_addresses=(LOOPBACK,), server=True)
        kwok_config = work / "kwok.yaml"
        kwok_config.write_text(KWOK_CONFIG)
        kwok = self._start(
            "kwok",
            [
                str(binaries["kwok"]),
                f"--kubeconfig={kubeconfigs['kwok']}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={fleet.KWOK_ANNOTATION}={fleet.KWOK_ANNOTATION_VALUE}",
                # the node port: KWOK serves healthz and pods/log there, over TLS like a kubelet
                f"--server-address={LOOPBACK}:{self.ports['kwok']}",
                f"--node-port={self.ports['kwok']}",
                f"--tls-cert-file={kwok_serving.cert_path}",
                f"--tls-private-key-file={kwok_serving.key_path}",
                "--enable-crds=Logs",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
                f"--node-ip={LOOPBACK}",
            ],
            extra_env={"KWOK_WORKDIR": str(work / "kwok")},  # else KWOK keeps state under ~/.kwok
        )
        insecure = _insecure_context()
        process.wait_http_ok(
            controller_manager,
            f"https://{LOOPBACK}:{self.ports['controller-manager']}/healthz",
            timeout_seconds=READY_TIMEOUT_SECONDS,
            ssl_context=insecure,
        )
        process.wait_http_ok(
            scheduler,
            f"https://{LOOPBACK}:{self.ports['scheduler']}/healthz",
            timeout_seconds=READY_TIMEOUT_SECONDS,
            ssl_context=insecure,
        )
        process.wait_http_ok(
            kwok,
            f"https://{LOOPBACK}:{self.ports['kwok']}/healthz",
            timeout_seconds=READY_TIMEOUT_SECONDS,
            ssl_context=insecure,
        )

    def _start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> process.Component:
        work = self._require_workdir()
        component = process.start(name, argv, work, extra_env)
        self.components.append(component)
        return component

    def failure_report(self) -> str:
        """The last log lines of every component, for a failed start or test."""
        return "\n".join(
            f"--- {c.name} (pid {c.pid}, {'running' if c.alive() else 'exited'}) ---\n{process.log_tail(c.log_path)}"
            for c in self.components
        )

    def down(self) -> None:
        # Reverse start order: KWOK and the controllers before the API server, etcd last.
        for component in reversed(self.components):
            process.stop(component)
        self.components.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # --- state for the CLI, which starts the cluster in one process and stops it in another ---

    def state(self) -> dict[str, Any]:
        return {
            "workdir": str(self._require_workdir()),
            "kubeconfig": str(self.kubeconfig),
            "unprivilegedKubeconfig": str(self.unprivileged_kubeconfig),
            "server": self.server,
            "ports": self.ports,
            "components": [
                {"name": c.name, "pid": c.pid, "log": str(c.log_path), "executable": c.executable}
                for c in self.components
            ],
            "timings": self.timings,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LocalCluster:
        cluster = cls(nodes=(), crd_dir=None, workdir=Path(state["workdir"]), ports=dict(state["ports"]))
        cluster.components = [
            process.Component(name=c["name"], pid=int(c["pid"]), log_path=Path(c["log"]), executable=c["executable"])
            for c in state["components"]
        ]
        return cluster

    def write_state(self, path: Path) -> None:
        path.write_text(json.dumps(self.state(), indent=2))
