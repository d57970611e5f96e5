"""Cost of the default LM's linear layers at 1-4 rows (decode steps of k samples), by kernel.

Batched sampling pays only if a step over k rows costs about what a step over one row does:
the weights are read once for every row. In float32 on this box's CPUs a 2-row matmul costs
about twice a 1-row one (torch's default float32 linear), so k = 2 batched gains only ~1.3x.
This measures, for each of SmolLM2-135M's linear shapes, the time per call of:

  linear   torch.nn.functional.linear (what transformers calls)
  mkl      MKL's packed sgemm (torch.ops.mkl._mkl_linear on a weight packed once for the row count)
  mkldnn   oneDNN's linear on a weight reordered once for the row count
           (torch.ops.mkldnn._linear_pointwise); mkldnn-1 reordered for one row, used at all
  int8     weight-only int8 (torch._weight_int8pack_mm: int8 weights, a float scale per output
           row, float32 activations), a quarter of the bytes to read

    .venv/bin/python bench/linear_rows.py --repeats 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# SmolLM2-135M: hidden 576, 9 heads of 64 (3 key/value heads), MLP 1536, vocabulary 49,152; per
# layer q, k, v, o, gate, up, down, 30 layers, then the output layer.
SHAPES = {
    "q/o 576x576": (576, 576, 60),
    "k/v 576x192": (576, 192, 60),
    "gate/up 576x1536": (576, 1536, 60),
    "down 1536x576": (1536, 576, 30),
    "output 576x49152": (576, 49152, 1),
}


HINTS = (1, 2, 4, 64)


def kernels(weight, rows: int):
    import torch

    fns = {"linear": lambda x: torch.nn.functional.linear(x, weight)}
    try:
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)
        fns["mkl"] = lambda x: torch.ops.mkl._mkl_linear(x, packed, weight, None, rows)
    except (AttributeError, RuntimeError):
        pass
    try:
        reordered = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        fns["mkldnn"] = lambda x: torch.ops.mkldnn._linear_pointwise(
            x, reordered, None, "none", [], ""
        )
        # Reordered once for a given row count, then used at every row count (a model's way).
        for hint in HINTS:
            once = torch.ops.mkldnn._reorder_linear_weight(weight, hint)
            fns[f"mkldnn-{hint}"] = lambda x, w=once: torch.ops.mkldnn._linear_pointwise(
                x, w, None, "none", [], ""
            )
    except (AttributeError, RuntimeError):
        pass
    scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
    q = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    fns["int8"] = lambda x: torch._weight_int8pack_mm(x, q, scales)
    return fns


def time_call(fn, x, repeats: int) -> float:
    for _ in range(5):
        fn(x)
    started = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - started) / repeats


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many")
    parser.add_argument("--rows", default="1,2,4")
    args = parser.parse_args(argv)
    rows_list = [int(r) for r in args.rows.split(",")]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    per_step = {}
    for name, (k, n, count) in SHAPES.items():
        weight = torch.randn(n, k) * 0.02
        line = [name]
        for rows in rows_list:
            x = torch.randn(rows, k)
            reference = torch.nn.functional.linear(x, weight)
            for kernel, fn in kernels(weight, rows).items():
                error = (fn(x) - reference).abs().max().item()
                repeats = max(5, args.repeats // (50 if n > 10_000 else 1))
                best = min(time_call(fn, x, repeats) for _ in range(args.rounds))
                per_step[(kernel, rows)] = per_step.get((kernel, rows), 0.0) + best * count
                line.append(f"{kernel}@{rows} {best * 1e6:.0f} us (max err {error:.1e})")
        print(" | ".join(line))
    print("\nper decode step, all linear layers (ms):")
    for kernel in sorted({k for k, _ in per_step}):
        cells = [f"{rows} rows {per_step[(kernel, rows)] * 1e3:.1f}" for rows in rows_list]
        ratio = None
        if 1 in rows_list and 2 in rows_list:
            ratio = per_step[(kernel, 2)] / per_step[(kernel, 1)]
        print(f"  {kernel:7s} " + " · ".join(cells) + (f" · 2/1 = {ratio:.2f}" if ratio else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
