"""CRDs: the project's crds/ are installed and Established; CEL validation is enforced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import install_crds
from localcluster.cluster import DEFAULT_CRD_DIR
from localcluster.resources import crd_established

pytestmark = pytest.mark.integration

HTTP_UNPROCESSABLE = 422


def project_crds() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(DEFAULT_CRD_DIR.glob("*.y*ml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document.get("kind") == "CustomResourceDefinition"
    ]


@pytest.mark.parametrize("crd", project_crds(), ids=lambda crd: crd["metadata"]["name"])
def test_project_crd_is_established_and_served(
    crd: dict[str, Any], cluster: Any, api_client: client.ApiClient, custom_objects: client.CustomObjectsApi
) -> None:
    if cluster.local is None:  # the local cluster installs crds/ itself; elsewhere do it here
        install_crds(api_client, DEFAULT_CRD_DIR)
    assert crd_established(api_client, crd["metadata"]["name"])
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("served", True))
    plural = spec["names"]["plural"]
    # listing at cluster level works for both scopes: it proves the API is served
    listed: Any = custom_objects.list_cluster_custom_object(spec["group"], version, plural)
    assert listed["kind"].endswith("List")


GROUP = "harness.vram.dev"
PROBE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"probes.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "minMiB": {"type": "integer"},
                                    "maxMiB": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {"rule": "self.minMiB <= self.maxMiB", "message": "minMiB must not exceed maxMiB"}
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def probe_crd(api_client: client.ApiClient, tmp_path: Path) -> Iterator[str]:
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump(PROBE_CRD))
    (name,) = install_crds(api_client, tmp_path)
    yield name
    client.ApiextensionsV1Api(api_client).delete_custom_resource_definition(name)


def probe(name: str, min_mib: int, max_mib: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Probe",
        "metadata": {"name": name},
        "spec": {"minMiB": min_mib, "maxMiB": max_mib},
    }


def test_installed_crd_enforces_its_cel_rule(
    probe_crd: str, namespace: str, api_client: client.ApiClient, custom_objects: client.CustomObjectsApi
) -> None:
    assert crd_established(api_client, probe_crd)
    custom_objects.create_namespaced_custom_object(GROUP, "v1", namespace, "probes", probe("ok", 1, 2))

    with pytest.raises(ApiException) as rejected:
        custom_objects.create_namespaced_custom_object(GROUP, "v1", namespace, "probes", probe("bad", 3, 2))
    assert rejected.value.status == HTTP_UNPROCESSABLE
    assert "minMiB must not exceed maxMiB" in str(rejected.value.body)
    stored: Any = custom_objects.list_namespaced_custom_object(GROUP, "v1", namespace, "probes")
    names = [item["metadata"]["name"] for item in stored["items"]]
    assert names == ["ok"]
