from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from vram_operator.cli import build_parser
from vram_operator.errors import InputError
from vram_operator.simulate.faults import parse_faults
from vram_operator.simulate.main import settings_from
from vram_operator.simulate.runtime import FaultsFile
from vram_operator.simulate.world import pod_view


def args(*argv: str) -> argparse.Namespace:
    return build_parser("simulate").parse_args(["simulate", *argv])


def test_defaults_are_the_issues_and_kubelets() -> None:
    settings = settings_from(args())
    assert (settings.perturbation.activation, settings.perturbation.weights) == (0.08, 0.02)
    assert (settings.backoff.initial_s, settings.backoff.max_s) == (10.0, 300.0)
    assert settings.seed == settings.perturbation.seed == 0


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--activation-error", "1"), "--activation-error"),
        (("--weights-error", "-0.1"), "--weights-error"),
        (("--interval", "0"), "--interval"),
        (("--backoff-seconds", "5", "--backoff-max-seconds", "4"), "--backoff-max-seconds"),
    ],
)
def test_bad_settings_name_their_flag(argv: tuple[str, ...], flag: str) -> None:
    with pytest.raises(InputError, match=f"^{flag}: "):
        settings_from(args(*argv))


def test_a_bad_faults_file_at_start_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("nodes: {workstation: {gpus: {0: {foreignMiB: -5}}}}")
    with pytest.raises(InputError, match=r"faults.yaml: nodes.workstation.gpus.0.foreignMiB: "):
        settings_from(args("--faults", str(path)))


def test_faults_are_re_read_on_change_and_a_bad_edit_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    faults = FaultsFile(path)
    assert faults.current() == parse_faults("")  # no file: no faults
    path.write_text("nodes: {workstation: {gpus: {0: {lost: true}}}}")
    assert faults.current().gpu("workstation", 0).lost
    path.write_text("nodes: [not, a, mapping]")
    os.utime(path, ns=(1, 10**18))
    assert faults.current().gpu("workstation", 0).lost  # kept
    path.write_text("servers: {ai/x: {trueFootprintMiB: 900}}")
    os.utime(path, ns=(1, 2 * 10**18))
    current = faults.current()
    assert not current.gpu("workstation", 0).lost
    assert current.servers["ai/x"].true_footprint_mib == 900


def test_unknown_fault_keys_are_refused() -> None:
    with pytest.raises(InputError, match=r"nodes\.w\.stalled"):
        parse_faults("nodes: {w: {stalled: true}}")


def test_gpus_of_a_pod_by_envvar_or_by_claim() -> None:
    envvar = {
        "metadata": {"uid": "u", "name": "p", "namespace": "ai"},
        "spec": {
            "nodeName": "n",
            "containers": [{"name": "c", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "GPU-a,GPU-b"}]}],
        },
        "status": {"phase": "Running"},
    }
    assert pod_view(envvar).gpu_uuids == ("GPU-a", "GPU-b")
    dra = {
        "metadata": {"uid": "u", "name": "p", "namespace": "ai"},
        "spec": {
            "nodeName": "n",
            "containers": [{"name": "c"}],
            "resourceClaims": [{"name": "gpu-0", "resourceClaimName": "n-gpu-c"}],
        },
        "status": {"phase": "Running"},
    }
    assert pod_view(dra, {"n-gpu-c": "GPU-c"}).gpu_uuids == ("GPU-c",)
    deleting = dict(envvar, metadata={**envvar["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"})
    assert not pod_view(deleting).running
