"""Pipeline parallel: which layers each vLLM pipeline stage holds, and what that stage weighs (pure).

vLLM splits the decoder layers into `pipelineParallelSize` contiguous stages of
`layers // stages` each; the remainder goes one layer apiece to the stages before the last,
counting back from the second-to-last (the last stage also computes the final norm, the LM
head and the sampler). The first stage holds the token embedding, the last the LM head (its own
copy of the embedding when the two are tied); a vision tower is built on every stage. Each stage
splits its share over `tensorParallelSize` GPUs and sizes its KV cache for its own layers; vLLM
then gives every stage the smallest number of KV blocks any stage could hold, so the stage that
needs the most memory binds the whole server.
"""

from __future__ import annotations

import dataclasses

from vram_operator.sizing import vllm
from vram_operator.sizing.architecture import ModelArchitecture
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.loaded import loaded_bytes_per_rank


def layer_partition(num_layers: int, stages: int) -> tuple[int, ...]:
    """Layers per stage, first to last, as vLLM splits them without VLLM_PP_LAYER_PARTITION."""
    if stages < 1:
        raise SizingError(f"pipeline parallel size {stages} must be >= 1", field="pipelineParallelSize")
    if num_layers < stages:
        raise SizingError(
            f"pipeline parallel size {stages} is more than the model's {num_layers} layers",
            field="pipelineParallelSize",
        )
    counts = [num_layers // stages] * stages
    for offset in range(2, num_layers % stages + 2):
        counts[-offset] += 1
    return tuple(counts)


def stage_architectures(arch: ModelArchitecture, stages: int) -> tuple[ModelArchitecture, ...]:
    """The part of the model each stage holds: its layers, and the embedding / LM head where they live."""
    if stages == 1:
        return (arch,)
    kinds = arch.layer_kinds()
    result: list[ModelArchitecture] = []
    start = 0
    for index, count in enumerate(layer_partition(arch.num_layers, stages)):
        end = start + count
        first, last = index == 0, index == stages - 1
        result.append(
            dataclasses.replace(
                arch,
                num_layers=count,
                layer_types=kinds[start:end],
                first_k_dense_layers=max(0, min(end, arch.first_k_dense_layers) - start),
                holds_embedding=arch.holds_embedding and first,
                holds_lm_head=arch.holds_lm_head and last,
                # Counted from the stage's own shapes (a given total describes the whole model).
                params_b=None,
            )
        )
        start = end
    return tuple(result)


def stage_weights_bytes(
    total_bytes: int, arch: ModelArchitecture, stage: ModelArchitecture, dtype: str | None, quantization: str | None
) -> int:
    """A stage's share of `total_bytes`, in proportion to what its shapes weigh against the whole model's."""
    whole = weights_bytes_for_architecture(arch, dtype, quantization)
    if whole <= 0:
        return total_bytes
    return round(total_bytes * weights_bytes_for_architecture(stage, dtype, quantization) / whole)


def binding_stage_profile(
    arch: ModelArchitecture,
    total_bytes: int,
    settings: vllm.VllmSettings,
    gpu_total_mib: float,
    *,
    stages: int = 1,
    sequences: int = 1,
    gpu_name: str = "",
    source: str = "config",
    quantization: str | None = None,
    exact_weights: bool = False,
) -> vllm.VllmProfile:
    """vLLM's start-up profile of the stage that binds: the one needing the most memory per GPU.

    Every GPU of the server runs at the same utilization and every stage gets the KV blocks of
    the poorest, so the stage that needs the most memory for `sequences` full-length requests
    decides the budget of all of them. With one stage this is the plain tensor-parallel profile.
    `total_bytes` is the checkpoint's; vLLM's own additions on each GPU (loaded.py) are added
    unless `exact_weights` (a weightsMiB given by the user is taken as what one stage loads).
    """
    tp = settings.tensor_parallel_size
    profiles = []
    for stage in stage_architectures(arch, stages):
        stage_bytes = (
            total_bytes
            if stage is arch
            else stage_weights_bytes(total_bytes, arch, stage, settings.dtype, quantization)
        )
        per_rank = (
            vllm.weights_per_rank(stage_bytes, stage, tp)
            if exact_weights
            else loaded_bytes_per_rank(stage_bytes, stage, tp, dtype=settings.dtype, quantization=quantization)
        )
        profiles.append(vllm.profile(stage, per_rank, settings, gpu_total_mib, gpu_name=gpu_name, source=source))
    return max(profiles, key=lambda p: vllm.memory_for_tokens(p, p.max_model_len * min(sequences, p.max_num_seqs)))
