"""What engines report about themselves, at the edge: each new Ready pod's start-up log read (bounded)
into `status.engineReport`, and the runs kept in (and read back from) the ConfigMap of measured runs.
The pure parts are controller/engine_reports.py, controller/measured_runs.py and sizing/."""

from __future__ import annotations

import asyncio
import logging

from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus
from vram_operator.controller.engine_reports import MAX_LOG_READS, engine_report, pods_to_read, report_complete
from vram_operator.controller.measured_runs import MEASURED_RUNS_CONFIG_MAP, measured_run
from vram_operator.controller.pods import PodFacts
from vram_operator.controller.runtime import Runtime
from vram_operator.sizing.measured import read_records, with_record

log = logging.getLogger(__name__)
# Engines that print a start-up report (a generic service prints nothing the operator can read).
REPORTING_ENGINES = frozenset({"vllm", "llamacpp"})


class EngineRuns:
    """Reads engines' reports and keeps their runs; state lives in the Runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def load_measured_runs(self) -> None:
        """The measured runs as their ConfigMap holds them now (none while it does not exist)."""
        try:
            data = await asyncio.to_thread(
                self.rt.kube.config_map_data, self.rt.settings.measured_runs_namespace, MEASURED_RUNS_CONFIG_MAP
            )
        except Exception as error:  # sizing goes on from the model and the runs read last
            log.warning("cannot read the measured runs: %s", error)
            return
        self.rt.measured = read_records(data or {})

    async def record_run(self, server: InferenceServer, status: InferenceServerStatus, moment: str) -> None:
        """Keep the run of a server whose engine reported and whose memory was measured (once per pod)."""
        report = status.engine_report
        if report is None or self.rt.runs_recorded.get(server.key) == report.pod:
            return
        run = measured_run(server, status, moment)
        if run is None:
            return
        namespace = self.rt.settings.measured_runs_namespace
        self.rt.runs_recorded[server.key] = report.pod  # tried once per pod, kept or not
        try:
            data = await asyncio.to_thread(self.rt.kube.config_map_data, namespace, MEASURED_RUNS_CONFIG_MAP)
            await asyncio.to_thread(
                self.rt.kube.put_config_map_data, namespace, MEASURED_RUNS_CONFIG_MAP, with_record(data or {}, run)
            )
        except Exception as error:  # the server runs on; its run is only not kept for the next one
            log.warning("%s: cannot keep %s: %s", server.key, run.describe(), error)
            return
        log.info("%s: kept %s", server.key, run.describe())

    async def read_engine_report(
        self, server: InferenceServer, status: InferenceServerStatus, pods: list[PodFacts], moment: str
    ) -> InferenceServerStatus:
        """`status.engineReport` from the start-up log of a newly Ready pod (read once, bounded; again on
        a later check, a few times at most, while it holds no complete report); an earlier pod's report
        stands until then."""
        if server.spec.engine not in REPORTING_ENGINES:
            return status
        live = {pod.uid for pod in pods}
        reads = {uid: n for uid, n in self.rt.logs_read.get(server.key, {}).items() if uid in live}
        self.rt.logs_read[server.key] = reads
        for pod in pods_to_read(pods, reads):
            text = await asyncio.to_thread(self.rt.kube.log_head, pod.namespace, pod.name, pod.container)
            report = engine_report(server.spec.engine, text, pod.name, moment)
            reads[pod.uid] = MAX_LOG_READS if report_complete(report) else reads.get(pod.uid, 0) + 1
            if report is not None:
                return status.model_copy(update={"engine_report": report})
        return status
