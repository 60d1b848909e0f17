"""Pipeline parallel in the fleet decision: a replica takes TP x PP GPUs of one node, or says why not."""

from __future__ import annotations

from test_decide import CONFIG_MAPS, node, qwen

from vram_operator.decide import decide

H100 = ("NVIDIA H100 80GB HBM3", 81559.0, 0.0)


def test_pp2_tp2_is_placed_on_four_gpus_of_one_node() -> None:
    decision = decide(
        [qwen("llm", tensorParallelSize=2, pipelineParallelSize=2)],
        [node("small", H100, H100), node("big", H100, H100, H100, H100)],
        config_maps=CONFIG_MAPS,
    )
    llm = decision.servers["ai/llm"]
    assert llm.placement is not None, llm
    assert llm.placement.node == "big"
    assert len({gpu.uuid for gpu in llm.placement.gpus}) == 4
    assert llm.fits, llm.fit_message


def test_more_gpus_than_any_node_has_is_not_placed_and_says_so() -> None:
    decision = decide(
        [qwen("llm", tensorParallelSize=2, pipelineParallelSize=4)],
        [node("a", H100, H100, H100, H100), node("b", H100, H100, H100, H100)],
        config_maps=CONFIG_MAPS,
    )
    llm = decision.servers["ai/llm"]
    assert llm.placement is None and not llm.sizing_error
    assert llm.unplaced_reason == "TensorParallelTooLarge"
    assert llm.unplaced_message is not None and "needs 8 GPUs on one node" in llm.unplaced_message
    assert any("4 stages of 7+7+7+7 layers, each on 2 GPU(s)" in reason for reason in llm.reasons)
