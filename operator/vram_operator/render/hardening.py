"""Safe pod defaults the engines tolerate: security contexts, no API token, and resource requests.

Every default here can be overridden per server (spec.securityContext, spec.podSecurityContext,
spec.resources); the host-access guard (host_access.py) still runs on the result, so an override
cannot re-open privileged or host access unless the operator allows it.

What the engines tolerate, and so what is not a default:
- runAsNonRoot: the official vLLM image (vllm/vllm-openai) and llama.cpp's server images run as
  root and write their model and compile caches under /root; forcing a non-root user breaks them.
  A server whose image runs as another user sets it in spec.podSecurityContext.
- readOnlyRootFilesystem: vLLM writes torch.compile, Triton and Hugging Face caches into the image's
  file system at start; llama.cpp downloads models there with -hf.
Everything else costs the engines nothing: they need no capability (the GPU devices come from the
container runtime, not from a capability), no privilege escalation and no syscall outside the
runtime's default seccomp profile, and never talk to the Kubernetes API.
"""

from __future__ import annotations

import math
from typing import Any

from vram_operator.api import InferenceServer

# Host memory beyond the weights, per engine process (one per tensor-parallel rank): the Python
# interpreter with torch and the engine imported, the CUDA context's host side, tokenizer and NCCL
# buffers. vLLM's processes sit at 1.5-2 GiB resident before they load a weight.
HOST_MEMORY_PER_RANK_MIB = 2048
# A generic service's host memory is unknown; this is a floor for scheduling, not a limit.
GENERIC_HOST_MEMORY_MIB = 1024
# One core per engine process: each rank's process drives its GPU from the CPU.
CPU_PER_RANK = 1


def pod_security_context(server: InferenceServer) -> dict[str, Any]:
    """The pod's securityContext: the runtime's default seccomp profile, under the server's own fields."""
    return {"seccompProfile": {"type": "RuntimeDefault"}, **(server.spec.pod_security_context or {})}


def container_security_context(server: InferenceServer) -> dict[str, Any]:
    """The engine container's securityContext: no privilege escalation, no capability, under the server's own."""
    defaults = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {**defaults, **(server.spec.security_context or {})}


def host_memory_mib(server: InferenceServer, weights_mib_per_rank: float | None) -> int:
    """Host memory the pod requests, sized from the model.

    Engines load the weights through host RAM (safetensors or GGUF files mapped into the page cache,
    then copied to the GPU), so all ranks of one pod together pass the whole model through it:
    weights per rank x ranks, plus each rank's process. A request (the scheduler keeps that much
    free on the node), never a limit: a limit would OOM-kill the engine during a load peak.
    """
    ranks = server.spec.tensor_parallel_size
    if server.spec.engine == "generic" or not weights_mib_per_rank:
        return GENERIC_HOST_MEMORY_MIB if server.spec.engine == "generic" else HOST_MEMORY_PER_RANK_MIB * ranks
    return math.ceil(weights_mib_per_rank * ranks) + HOST_MEMORY_PER_RANK_MIB * ranks


def default_requests(server: InferenceServer, weights_mib_per_rank: float | None) -> dict[str, str]:
    """CPU and memory requests for a server that sets none (spec.resources.requests wins per key)."""
    cpu = CPU_PER_RANK * server.spec.tensor_parallel_size
    return {"cpu": str(cpu), "memory": f"{host_memory_mib(server, weights_mib_per_rank)}Mi"}
