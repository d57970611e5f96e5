"""Float32 linear layers through oneDNN on weights reordered once, for sampling on a CPU.

Batched sampling pays only if a decode step over k rows costs about what one row does: the
weights are read once for every row. torch's default float32 linear (`F.linear`) does not give
that on the CPUs seen here: for SmolLM2-135M's layers a step over 2 rows cost 2.0x one row
(bench/linear_rows.py: 12.6 ms at 1 row, 25.4 ms at 2, 30.0 ms at 4, all linear layers of a
step). oneDNN's linear on a weight reordered once into its blocked layout (the kernel
torch.compile's CPU backend uses for frozen float32 linears) costs 7.4 / 6.6 / 7.2 ms at 1 / 2 /
4 rows, and a 512-token prefill 302 ms instead of 712 ms. So where the backend samples in float32
on a CPU with oneDNN, every `nn.Linear` computes through it (`pack_linears`).

Measured there, not assumed: bf16 is left as it is (its matmuls were already flat in the row
count), and so is anything that needs gradients (the reordered weight is a constant copy).
The reorder is asked for 4 rows: a weight reordered for 1 row is laid out for one-row products
and cost 2x at 2 rows again; for 2, 4 or 64 rows the cost was the same at every row count.
"""

from __future__ import annotations

import logging
import types

import torch
from torch import nn

logger = logging.getLogger(__name__)

PACK_ROWS = 4


def packed_linear_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `pack_linears` applies: float32 on a CPU whose torch has oneDNN."""
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_grad_enabled():
        return nn.functional.linear(x, self.weight, self.bias)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    if not flat.is_contiguous():
        flat = flat.contiguous()
    out = product(flat, self.alignlab_packed, self.bias)
    return out.reshape(*shape[:-1], out.shape[-1])


def pack_linears(model: nn.Module) -> int:
    """Make every float32 `nn.Linear` of `model` compute through oneDNN on a reordered copy of
    its weight (inference only: with gradients on, a layer computes as before). Returns how many
    layers were packed (0, with a warning, where oneDNN cannot reorder them). The original
    weights stay (tied embeddings and `state_dict` need them), so the linear weights are held
    twice: about 0.54 GB more for SmolLM2-135M (135M float32 weights in 211 layers)."""
    layers = [
        m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32
    ]
    reordered = reorder_matrices([m.weight for m in layers])
    if reordered is None:  # a oneDNN build or CPU that cannot: every layer stays as it was
        return 0
    for module, weight in zip(layers, reordered, strict=True):
        module.alignlab_packed = weight
        module.forward = types.MethodType(_packed_forward, module)
    return len(layers)


def reorder_matrices(matrices: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Reorder constant float32 (out, in) matrices (the linear weights above) once for oneDNN,
    for products `x @ matrix.T` through `product`; None (with a warning) where oneDNN cannot
    reorder one.

    The shared prompt prefix's keys are such a constant too (shared_prefix.py): on an AVX2-only CPU
    its query-key products for 2 samples cost 1.55x those for one through torch's batched
    matmul, 1.15x through oneDNN, which is also faster at one (bench/attention_rows.py).
    """
    try:
        with torch.no_grad():
            return [
                torch.ops.mkldnn._reorder_linear_weight(m.detach().contiguous(), PACK_ROWS)
                for m in matrices
            ]
    except RuntimeError:
        logger.warning("oneDNN could not reorder %d matrices", len(matrices), exc_info=True)
        return None


def product(
    x: torch.Tensor, reordered: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`x @ matrix.T (+ bias)` for a contiguous 2-D float32 `x` and a matrix from
    `reorder_matrices`."""
    return torch.ops.mkldnn._linear_pointwise(x, reordered, bias, "none", [], "")
