"""Node agent: reads the node's GPUs (NVML or a simulated profile), attributes GPU processes to pods
through /proc/<pid>/cgroup, writes GpuNode/<node>.status and serves Prometheus metrics."""
