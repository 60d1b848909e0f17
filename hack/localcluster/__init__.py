"""A local Kubernetes control plane for integration tests, built from Go modules by hack/."""

from localcluster.cluster import UNPRIVILEGED_USER, LocalCluster
from localcluster.fleet import FakeGpu, FakeNode, desktop, h100_rack, reference_fleet, workstation
from localcluster.process import ComponentError
from localcluster.resources import ResourceError, install_crds
from localcluster.tools import MissingBinaryError, binary_path

__all__ = [
    "UNPRIVILEGED_USER",
    "ComponentError",
    "FakeGpu",
    "FakeNode",
    "LocalCluster",
    "MissingBinaryError",
    "ResourceError",
    "binary_path",
    "desktop",
    "h100_rack",
    "install_crds",
    "reference_fleet",
    "workstation",
]
