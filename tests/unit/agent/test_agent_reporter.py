from __future__ import annotations

import pytest
from agent_fakes import FakeCustomObjects

from vram_operator.agent.reporter import Backoff, GpuNodeReporter, Outcome
from vram_operator.agent.snapshot import GpuSample, NodeSnapshot
from vram_operator.agent.status import build_status
from vram_operator.api.gpu_node import GpuNodeStatus

FIRST = "2026-01-01T00:00:00Z"


def status(used: float = 1000.0, now: str = FIRST, driver: str | None = "550") -> GpuNodeStatus:
    sample = GpuSample(index=0, uuid="GPU-a", total_mib=24564, used_mib=used, free_mib=24564 - used)
    snapshot = NodeSnapshot("nvml", (sample,), driver)
    # As the agent does: conditions keep the transition times of the status before.
    first = build_status(snapshot, {}, {}, now=FIRST, agent_version="0.1.0")
    return build_status(snapshot, {}, {}, now=now, agent_version="0.1.0", previous=first)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reporter(api: FakeCustomObjects, clock: Clock) -> GpuNodeReporter:
    return GpuNodeReporter(api, "node-1", heartbeat_s=60, backoff=Backoff(base_s=1, cap_s=8), clock=clock)


def test_first_report_creates_the_gpunode_then_writes_its_status() -> None:
    api, clock = FakeCustomObjects(), Clock()
    assert reporter(api, clock).report(status()) is Outcome.WRITTEN
    node = api.objects["node-1"]
    assert (node["apiVersion"], node["kind"], node["metadata"]) == ("vram.dev/v1alpha1", "GpuNode", {"name": "node-1"})
    assert node["status"]["gpus"][0]["memoryUsedMiB"] == 1000
    assert node["status"]["lastHeartbeat"] == "2026-01-01T00:00:00Z"


def test_an_existing_gpunode_is_not_created_again() -> None:
    api, clock = FakeCustomObjects(), Clock()
    api.objects["node-1"] = {"metadata": {"name": "node-1"}}
    reporter(api, clock).report(status())
    assert len(api.patches) == 1


def test_writes_only_on_change_or_when_the_heartbeat_is_due() -> None:
    api, clock = FakeCustomObjects(), Clock()
    writer = reporter(api, clock)
    writer.report(status())

    clock.now = 30
    assert writer.report(status(now="2026-01-01T00:00:30Z")) is Outcome.UNCHANGED
    clock.now = 40
    assert writer.report(status(used=2000, now="2026-01-01T00:00:40Z")) is Outcome.WRITTEN
    clock.now = 99
    assert writer.report(status(used=2000, now="2026-01-01T00:01:39Z")) is Outcome.UNCHANGED
    clock.now = 100
    assert writer.report(status(used=2000, now="2026-01-01T00:01:40Z")) is Outcome.WRITTEN
    assert api.objects["node-1"]["status"]["lastHeartbeat"] == "2026-01-01T00:01:40Z"
    assert len(api.patches) == 3


def test_fields_the_new_status_drops_are_cleared() -> None:
    api, clock = FakeCustomObjects(), Clock()
    writer = reporter(api, clock)
    writer.report(status())
    writer.report(status(driver=None))
    assert api.patches[-1]["status"]["driverVersion"] is None
    assert "driverVersion" not in api.objects["node-1"]["status"]


def test_api_errors_back_off_exponentially_and_never_raise() -> None:
    api, clock = FakeCustomObjects(), Clock()
    writer = reporter(api, clock)
    api.fail_next = [500, 503, 500, 500, 500]
    outcomes = []
    for second in range(0, 24):
        clock.now = second
        outcomes.append((second, writer.report(status())))

    attempts = [s for s, o in outcomes if o is not Outcome.BACKING_OFF]
    # Fails at 0; retries after 1, 2, 4, 8 (capped) seconds; the sixth attempt succeeds.
    assert attempts[:6] == [0, 1, 3, 7, 15, 23]
    assert outcomes[-1][1] is Outcome.WRITTEN
    assert writer.consecutive_failures == 0


def test_a_create_conflict_means_someone_else_created_it() -> None:
    api, clock = FakeCustomObjects(), Clock()
    api.fail_next = [404, 409]  # patch: not found; create: already exists (created meanwhile)
    api.objects["node-1"] = {"metadata": {"name": "node-1"}}
    assert reporter(api, clock).report(status()) is Outcome.WRITTEN


@pytest.mark.parametrize(("failures", "delay"), [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)])
def test_backoff_delays(failures: int, delay: float) -> None:
    assert Backoff(base_s=1, cap_s=8).delay(failures) == delay
