"""The operator: kopf handlers over the pure core (sizing, placement, render).

Handlers are thin and module-level (servers.py, assignments.py; state in kopf's memo): they read
(kopf indexes of GpuNodes and InferenceServers, a few API reads) and call a reconciler
(ServerReconciler, AssignmentReconciler) that works over the KubePort, calls the planner through
one door (decision.decide) and pure policies (gpu_health, room, failures, the status builders),
and writes (owned Deployments, ResourceClaims, status patches, Events).

Failures: a kopf permanent error only for a spec that can never work. Everything the environment
causes is a status with a reason, looked at again when its inputs change and on a backoff: no room
(Pending, retried when a server goes or shrinks or a GpuNode gains memory), a GPU lost or reported
oddly (its servers re-placed), a missing GpuNode (unknown for --gpu-node-grace-seconds, then lost),
a missing ConfigMap (Pending; ConfigMaps that servers name are watched), a child the API server
refuses (Degraded ChildRejected), foreign memory that grows (MemoryFits False ForeignMemoryGrew).

Running it:
- One active replica. Either run two or more replicas with kopf peering
  (`vram-operator run --peering vram-operator --priority N`, distinct N per replica: the highest
  priority works, the others pause; kopf's ClusterKopfPeering CRD and an object of that name must
  be installed), or a single replica with `--standalone` in a Deployment with `strategy: Recreate`,
  so that two operators never write reservations at the same time.
- State of record is InferenceServer.status (placement = reservation); a restarted operator rebuilds
  its reservation book from the statuses (kopf indexes) before it handles anything. kopf keeps its
  own progress (handler retries) in `kopf.vram.dev/*` annotations, and what it last handled of
  each object in memory (diffbase.py: no write per creation or change). No finalizer on servers:
  deleting one never waits for the operator, its reservation goes with it and garbage collection
  removes its children. A
  GpuAssignment carries kopf's finalizer: its deletion waits until its pins and stopped servers
  are released (assignments.release_assignment).
- Periodic work (measured memory, lost GPUs, retries of unplaced servers with backoff, memory
  failure corrections, GpuAssignment rollout waves, children changed or deleted by hand restored
  (child_keeper), GpuNodes of silent agents marked Ready=Unknown (heartbeats)) runs in one loop
  every `--check-interval`.
- Probes: `--health-port` serves kopf's liveness endpoint at /healthz (use it for liveness and
  readiness). `--metrics-port` serves Prometheus metrics at /metrics (see controller.metrics).
- Logs are JSON lines on stderr (one object per record).
"""
