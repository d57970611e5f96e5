"""Compiled decoder layers (training/compiled.py): when "auto" compiles, that a compiled run
trains as the eager one does, and that the model is eager again afterwards."""

from __future__ import annotations

import pytest
import torch

from tests.training.toy_pm import config, tiny_pm, toy_rankings
from training import compiled
from training.compiled import decoder_layers, wants_compiled_layers
from training.loop import train_preference_model

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


def test_auto_compiles_only_a_big_enough_cpu_segment_run(monkeypatch):
    model, _ = tiny_pm("decoder")
    auto = config(compile_layers="auto")

    def wants(device=CPU, attention="alignlab_segments", distributed=False, cfg=auto):
        return wants_compiled_layers(
            model, cfg, device, attention=attention, distributed=distributed
        )

    # A tiny model never pays for the compile.
    assert not wants()
    monkeypatch.setattr(compiled, "MIN_LAYER_PARAMETERS", 0)
    assert wants() == compiled.can_build_kernels()
    assert not wants(attention="eager")  # padded batches: two changing sizes, not measured
    assert not wants(device=torch.device("cuda"))
    assert not wants(distributed=True)
    assert not wants(cfg=config(lora=True))
    assert not wants(cfg=config(gradient_checkpointing=True))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert not compiled.can_build_kernels()
    assert not wants()
    # "on" and "off" say it outright.
    assert wants(attention="eager", cfg=config(compile_layers="on"))
    assert not wants(cfg=config(compile_layers="off"))
    with pytest.raises(ValueError, match="compile_layers must be one of"):
        config(compile_layers="yes")


def test_on_needs_decoder_layers():
    encoder, _ = tiny_pm("encoder")
    assert decoder_layers(encoder) == []
    with pytest.raises(ValueError, match="compiles a decoder's layers; this model has none"):
        wants_compiled_layers(
            encoder, config(compile_layers="on"), CPU, attention="eager", distributed=False
        )


@pytest.mark.cpp_compiler
def test_a_compiled_run_trains_as_the_eager_one_and_leaves_the_model_eager():
    # Under the segment attention a batch is one flat row of changing length: four steps of
    # different lengths run on the one dynamic-shape compile, not one compile each.
    torch._dynamo.reset()
    runs = {}
    for choice in ("off", "on"):
        model, tokenizer = tiny_pm("decoder")
        keys = list(model.state_dict())
        seen = []
        result = train_preference_model(
            model,
            tokenizer,
            toy_rankings(32, seed=5),
            config(max_steps=4, attention="alignlab_segments", compile_layers=choice),
            on_step=lambda *_, seen=seen, model=model: seen.append(
                [layer._compiled_call_impl is not None for layer in decoder_layers(model)]
            ),
        )
        runs[choice] = [m["loss"] for m in result.history]
        compiled_while_training = all(all(step) for step in seen)
        assert compiled_while_training == (choice == "on")
        assert not any(layer._compiled_call_impl for layer in decoder_layers(model))
        assert list(model.state_dict()) == keys  # checkpoints keep their names
    assert runs["on"] == pytest.approx(runs["off"], abs=1e-4)
    # The layers share their graphs, and lengths do not recompile them: one graph before the
    # attention and one after (forward; their backwards are compiled with them).
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 4
