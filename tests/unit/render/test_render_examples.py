"""The example servers render into valid Kubernetes objects in both pinning modes."""

from __future__ import annotations

from pathlib import Path

import pytest
from kube_schema import assert_valid

from vram_operator.api import PlacementStatus
from vram_operator.manifests import load
from vram_operator.render import PINNING_MODES, PinningMode, PlacedReplica, RenderSettings, render

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FOLDERS = sorted(path for path in EXAMPLES.iterdir() if path.is_dir())


@pytest.mark.parametrize("mode", PINNING_MODES)
@pytest.mark.parametrize("folder", FOLDERS, ids=lambda path: path.name)
def test_example_servers_render_valid_objects(folder: Path, mode: PinningMode) -> None:
    manifests = load([str(folder)])
    node = max(manifests.nodes, key=lambda node: len(node.status.gpus) if node.status else 0)
    assert node.status is not None
    # the reference workstation mounts its model directory from the host: allowed there
    settings = RenderSettings(pinning_mode=mode, allow_host_access=True)
    for server in manifests.servers:
        gpus = node.status.gpus[: server.spec.tensor_parallel_size]
        placement = PlacementStatus.model_validate(
            {
                "node": node.metadata.name,
                "gpus": [
                    {"index": g.index, "uuid": g.uuid, "name": g.name, "totalMiB": g.memory_total_mib} for g in gpus
                ],
                "budgetMiB": gpus[0].memory_total_mib / 2,
            }
        )
        rendered = render(server, [PlacedReplica(0, placement, 0.5)], settings)
        for obj in rendered.objects:
            assert_valid(obj)
