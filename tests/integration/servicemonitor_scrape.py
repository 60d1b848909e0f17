"""A Prometheus scrape config shaped like the one prometheus-operator generates for a ServiceMonitor.

prometheus-operator turns each endpoint of a ServiceMonitor into a job that discovers the Endpoints of
the selected Services (kubernetes_sd, role endpoints) and relabels them: keep the Services whose labels
match the selector and the port named by the endpoint, then set the target labels `namespace`,
`service`, `pod`, `container`, `job` and `endpoint`. A scraped series that carries one of those labels
keeps its own value only with `honorLabels: true`; otherwise the scraped label is renamed
`exported_<label>`. This module reproduces that for the tests, so they see what a cluster running
kube-prometheus-stack sees.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def sanitize(label: str) -> str:
    """Kubernetes label name -> Prometheus meta label suffix (app.kubernetes.io/name -> app_kubernetes_io_name)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def scrape_configs(monitor: dict[str, Any], kubeconfig: Path) -> list[dict[str, Any]]:
    """One job per endpoint of the ServiceMonitor, as prometheus-operator writes it."""
    metadata, spec = monitor["metadata"], monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [metadata["namespace"]]
    selector: dict[str, str] = spec["selector"].get("matchLabels", {})
    jobs = []
    for index, endpoint in enumerate(spec["endpoints"]):
        relabel: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
        for key, value in sorted(selector.items()):
            relabel.append(
                {
                    "action": "keep",
                    "source_labels": [
                        f"__meta_kubernetes_service_label_{sanitize(key)}",
                        f"__meta_kubernetes_service_labelpresent_{sanitize(key)}",
                    ],
                    "regex": f"({value});true",
                }
            )
        relabel.append(
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": endpoint["port"]}
        )
        target = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
        for kind, label in (("Node", "node"), ("Pod", "pod")):
            relabel.append(
                {
                    "source_labels": target,
                    "separator": ";",
                    "regex": f"{kind};(.*)",
                    "replacement": "${1}",
                    "target_label": label,
                }
            )
        relabel += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]
        jobs.append(
            {
                "job_name": f"serviceMonitor/{metadata['namespace']}/{metadata['name']}/{index}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "honor_timestamps": True,
                "metrics_path": endpoint.get("path", "/metrics"),
                "scheme": endpoint.get("scheme", "http"),
                "kubernetes_sd_configs": [
                    {"role": "endpoints", "kubeconfig_file": str(kubeconfig), "namespaces": {"names": namespaces}}
                ],
                "relabel_configs": relabel,
            }
        )
    return jobs
