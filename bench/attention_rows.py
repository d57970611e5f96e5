"""Cost of the shared-prefix attention at 1, 2 and 4 samples, by how the query-key products run.

A decode step of k samples reads the prompt prefix's keys and values once for all rows
(assistant/backends/shared_prefix.py). Batched sampling pays only if that read costs about the
same for 2 samples as for one. This times, over all 30 layers of SmolLM2-135M (3 key/value
heads of 64, 9 query heads) and a 5,415-token prefix (the HHH prompt under the chat template),
with every layer's keys and values distinct and the caches flushed before each step, as in a
real decode step:

  bmm      the query-key products as torch's batched matmul (`queries @ keys.T`)
  onednn   each key/value head's keys reordered once for oneDNN (packed_linear.reorder_matrices),
           the products through `packed_linear.product` (what the backend does in float32)

and the whole attention function (products, softmax, value products) both ways. oneDNN is
timed at every --prefix (the backend uses it from shared_prefix.PACKED_KEYS_MIN_TOKENS on).

    .venv/bin/python bench/attention_rows.py --rounds 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS, KV_HEADS, HEADS, DIM = 30, 3, 9, 64
OWN = 40  # each row's own tokens after the prefix: the conversation and the reply so far


class _Layer:
    def __init__(self, index: int):
        self.layer_idx = index


def main(argv=None) -> int:
    import torch

    from assistant.backends.packed_linear import product
    from assistant.backends.shared_prefix import _shared_prefix_attention, prefix_layers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=int, default=5415)
    parser.add_argument("--rounds", type=int, default=8, help="median and min of this many")
    parser.add_argument("--samples", default="1,2,4")
    args = parser.parse_args(argv)
    samples = [int(s) for s in args.samples.split(",")]
    torch.manual_seed(0)
    keys = [torch.randn(1, KV_HEADS, args.prefix, DIM) for _ in range(LAYERS)]
    values = [torch.randn(1, KV_HEADS, args.prefix, DIM) for _ in range(LAYERS)]
    shared = {
        "bmm": prefix_layers(list(zip(keys, values, strict=True)), reorder_keys=False),
        "onednn": prefix_layers(
            list(zip(keys, values, strict=True)), reorder_keys=True, min_tokens=0
        ),
    }
    if shared["onednn"][0].packed_keys is None:
        print("oneDNN cannot reorder here: nothing to compare")
        return 1
    flush = torch.randn(64_000_000)  # 256 MB, more than any cache: each step reads from memory
    modules = [_Layer(i) for i in range(LAYERS)]

    def products(kind: str, queries: torch.Tensor) -> None:  # (kv_heads, rows, dim)
        for i in range(LAYERS):
            if kind == "bmm":
                queries @ keys[i][0].transpose(-1, -2)
            else:
                packed = shared["onednn"][i].packed_keys
                torch.stack([product(queries[h], packed[h]) for h in range(KV_HEADS)])

    def attention(kind: str, query, own_keys, own_values) -> None:
        for i in range(LAYERS):
            _shared_prefix_attention(
                modules[i],
                query,
                own_keys,
                own_values,
                None,
                scaling=DIM**-0.5,
                shared_prefix=shared[kind],
            )

    inputs = {}
    for k in samples:
        inputs[k] = (
            torch.randn(KV_HEADS, k * HEADS // KV_HEADS, DIM),
            torch.randn(k, HEADS, 1, DIM),
            torch.randn(k, KV_HEADS, OWN, DIM),
            torch.randn(k, KV_HEADS, OWN, DIM),
        )
        _, query, own_k, own_v = inputs[k]
        got = [
            _shared_prefix_attention(
                modules[0],
                query,
                own_k,
                own_v,
                None,
                scaling=DIM**-0.5,
                shared_prefix=shared[kind],
            )[0]
            for kind in ("bmm", "onednn")
        ]
        error = (got[0] - got[1]).abs().max().item()
        print(f"{k} sample(s): largest difference between the two paths {error:.1e}")

    times: dict[tuple[str, str, int], list[float]] = {}
    with torch.no_grad():
        for _ in range(args.rounds):  # alternated, so a slow spell lands on every cell
            for what in ("products", "attention"):
                for kind in ("bmm", "onednn"):
                    for k in samples:
                        queries, query, own_k, own_v = inputs[k]
                        flush.sum()
                        started = time.perf_counter()
                        if what == "products":
                            products(kind, queries)
                        else:
                            attention(kind, query, own_k, own_v)
                        elapsed = (time.perf_counter() - started) * 1e3
                        times.setdefault((what, kind, k), []).append(elapsed)

    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, float32, prefix "
        f"{args.prefix} tokens; ms per decode step (30 layers), median (min) of {args.rounds}\n"
    )
    print("| part | path | " + " | ".join(f"{k} sample(s)" for k in samples) + " | 2 / 1 |")
    print("| --- | --- | " + " | ".join("---" for _ in samples) + " | --- |")
    for what in ("products", "attention"):
        for kind in ("bmm", "onednn"):
            cells = [times[(what, kind, k)] for k in samples]
            text = [f"{statistics.median(c):.1f} ({min(c):.1f})" for c in cells]
            ratio = ""
            if 1 in samples and 2 in samples:
                one = statistics.median(times[(what, kind, 1)])
                ratio = f"{statistics.median(times[(what, kind, 2)]) / one:.2f}"
            print(f"| {what} | {kind} | " + " | ".join(text) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
