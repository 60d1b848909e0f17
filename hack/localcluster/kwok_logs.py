"""Container logs on KWOK nodes: KWOK serves `pods/log` (as a kubelet would) from a file named by a
`Logs` object (kwok.x-k8s.io/v1alpha1, one per pod, same namespace and name), read in the CRI log
format. The simulated GPU runtime writes those files and objects; this module installs the kind.

KWOK runs with `--enable-crds=Logs` and serves HTTPS on the node port its nodes advertise
(status.daemonEndpoints.kubeletEndpoint), at the node's InternalIP (loopback here); the API server
reaches it there like any kubelet.
"""

from __future__ import annotations

from typing import Any

LOGS_CRD_NAME = "logs.kwok.x-k8s.io"

# Only what the API server needs to store Logs objects; KWOK reads spec.logs[].logsFile.
LOGS_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": LOGS_CRD_NAME},
    "spec": {
        "group": "kwok.x-k8s.io",
        "names": {"kind": "Logs", "listKind": "LogsList", "plural": "logs", "singular": "logs"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}
