"""Compile each decoder layer of a CPU run (torch.compile, dynamic shapes), attention excluded.

Under the segment attention (`assistant.segment_attention`) a batch is one flat row whose only
changing size is its token count. Between the matmuls, which already run near the measured
peak, a layer spends much of a step in element-wise work: RMSNorm's float32 passes, the rotary
embedding, SiLU times the up projection, the residual adds, and their backwards — one pass over
memory each in eager mode. Inductor fuses them into a few C++ loops. The attention itself stays
eager (`torch.compiler.disable` on it: its loop over the groups would recompile every batch),
so each layer is two graphs, before and after it, shared by all layers of the model.

Measured on a 2-core AVX-512 EPYC, 160 HH pairs of `bench/pm_training.py` (BENCHMARKS.md):
steps 2-20 took 53-59 s compiled against 65-66 s eager, the first step ~4.5 s more (the
compile, with inductor's cache warm; ~15 s cold).

"auto" compiles where that was measured: a CPU run, one process, the segment attention, no
LoRA nor gradient checkpointing, layers big enough for the compile to pay
(`MIN_LAYER_PARAMETERS`), and a C++ compiler with the Python headers (inductor builds its
kernels with them). Tiny models (the tests') and GPU runs stay eager unless a config says "on".
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import torch

from assistant.segment_attention import SEGMENT_ATTENTION

# Decoder-layer parameters from which "auto" compiles: SmolLM2-135M's layers hold 106M; the
# compile costs seconds once a process, which a run of layers this size wins back in a few
# steps, and a tiny test model never would.
MIN_LAYER_PARAMETERS = 20_000_000
_MARK = "_alignlab_compiled"


def decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated blocks of a PM's (or an LM's) backbone: `model.backbone.layers` for the
    decoders transformers builds (Llama, Qwen2, Mistral, …); [] where there are none."""
    inner = getattr(model, "module", model)  # DDP
    backbone = getattr(inner, "backbone", inner)
    body = getattr(backbone, "model", backbone)  # an LM's decoder (distillation)
    layers = getattr(body, "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []


def can_build_kernels() -> bool:
    """Whether inductor can build its CPU kernels here: a C++ compiler (CXX, else g++, as
    inductor picks it) and Python.h."""
    compiler = shutil.which(os.environ.get("CXX") or "g++")
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return compiler is not None and headers.is_file()


def wants_compiled_layers(
    model, config, device: torch.device, *, attention: str, distributed: bool
) -> bool:
    """Whether this run, training with `attention`, compiles its decoder layers (the module
    docstring); "on" where there are none is an error, not a silent no."""
    choice = getattr(config, "compile_layers", "off")
    layers = decoder_layers(model)
    if choice == "off":
        return False
    if choice == "on":
        if not layers:
            raise ValueError("compile_layers='on' compiles a decoder's layers; this model has none")
        return True
    return (
        device.type == "cpu"
        and not distributed
        and attention == SEGMENT_ATTENTION
        # LoRA's wrapped linears and recomputed activations: neither measured compiled.
        and not getattr(config, "lora", False)
        and not getattr(config, "gradient_checkpointing", False)
        and sum(p.numel() for layer in layers for p in layer.parameters()) >= MIN_LAYER_PARAMETERS
        and can_build_kernels()
    )


def compile_layers(model) -> int:
    """Compile each decoder layer in place (`Module.compile`: the state dict keeps its keys, so
    checkpoints are unchanged); the number compiled."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
        setattr(layer, _MARK, True)
    return len(layers)


def uncompile_layers(model) -> None:
    """Back to eager for what `compile_layers` compiled: after the run the model scores padded
    batches under other attention kernels, which would only recompile."""
    for layer in decoder_layers(model):
        if getattr(layer, _MARK, False):
            # torch has no public inverse of Module.compile; it keeps the compiled call here.
            layer._compiled_call_impl = None
            delattr(layer, _MARK)
