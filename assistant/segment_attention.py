"""Linear layers over ONE flat row of packed groups, attention in their padded rows.

A packed group (`assistant.pm.packed_inputs`) is a shared prefix, then each response; a
response attends causally to itself and to the prefix, never to its siblings. Padded to one row
per group, a batch of eight HH pairs carried ~15 % padding through every linear layer, norm and
activation (bench/pm_training.py: 38,352 computed tokens for 32,553 real ones).

Here the groups of a batch sit back to back in one row with no padding (`flat_pack_ids`), which
is what the projections, the MLPs and the norms see. Only attention, a small part of the FLOPs
at these lengths, lays queries, keys and values out in the padded rows (`Segments`: two index
gathers) for one masked softmax per row, and gathers the real tokens' outputs back. That is
exactly the block mask of `packed_inputs` (tests compare rewards and gradients), for the
architectures whose attention is plain causal softmax attention (`can_use_segments`).

Measured on a 2-core AVX-512 EPYC, bf16 autocast, forward + backward of three batches of eight
pairs: eager on padded rows 4.41 s, this 3.67 s (BENCHMARKS.md). Tried and slower: SDPA per
group (the prefix and first response as one `is_causal` block, each further response under a
small mask) 6.2 s, its CPU backward dominating; a bf16 softmax (no float32 pass) 1.9x slower a
layer at width 596.

Switch a backbone to it with `set_attn_implementation(SEGMENT_ATTENTION)` (the trainer's
"auto" does on a CPU); without `segments` the function is plain SDPA, so a switched model still
scores padded batches as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from assistant.backends.shared_prefix import SHARED_PREFIX_MODEL_TYPES, can_share_prefix

SEGMENT_ATTENTION = "alignlab_segments"
# The architectures `can_use_segments` admits (without a sliding window).
SEGMENT_MODEL_TYPES = SHARED_PREFIX_MODEL_TYPES


def can_use_segments(config) -> bool:
    """Whether a backbone of this config may train on flat segment rows: its attention must be
    plain causal softmax attention, the same condition as the shared-prefix attention's."""
    return can_share_prefix(config)


@dataclass(frozen=True)
class Segments:
    """Where each token of a flat row of `length` tokens sits in the padded block layout of
    `assistant.pm.pack_ids` (`rows` x `width`), and that layout's mask.

    `padded[r * width + c]` is the flat index of row r's token c (padding points at token 0; its
    scores are masked and its output dropped); `flat[i]` is the padded slot of flat token i;
    `hidden` (rows x 1 x width x width, True = may NOT attend) is the block mask's complement.
    """

    padded: torch.Tensor
    flat: torch.Tensor
    hidden: torch.Tensor
    rows: int
    width: int

    @property
    def length(self) -> int:
        return self.flat.numel()

    def to(self, device) -> Segments:
        return Segments(
            self.padded.to(device), self.flat.to(device), self.hidden.to(device),
            self.rows, self.width,
        )  # fmt: skip


def segments_of(grouped: Sequence[tuple[list[int], list[list[int]]]], mask: torch.Tensor):
    """The layout of `grouped` (`assistant.pm.group_ids`: prefix ids, each response's ids) laid
    back to back, one group after another, given `pack_ids`' block mask of the same groups."""
    rows, width = len(grouped), mask.shape[-1]
    padded = torch.zeros(rows * width, dtype=torch.long)
    flat, at = [], 0
    for row, (prefix, own) in enumerate(grouped):
        if not own:
            raise ValueError("a packed group needs at least one response")
        length = len(prefix) + sum(map(len, own))
        padded[row * width : row * width + length] = torch.arange(at, at + length)
        flat.append(torch.arange(row * width, row * width + length))
        at += length
    return Segments(padded, torch.cat(flat), ~mask, rows, width)


def _segment_attention(
    module, query, key, value, attention_mask, *, scaling, dropout=0.0, segments=None, **kwargs
):
    """Attention of a flat row under its block mask (module docstring); SDPA without `segments`.

    Eager matmuls, not SDPA: on a CPU their backward is the faster at these lengths."""
    if segments is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if query.shape[0] != 1 or query.shape[2] != segments.length:
        raise ValueError(
            f"segments describe one row of {segments.length} tokens, the batch is "
            f"{tuple(query.shape[:1])} rows of {query.shape[2]}"
        )
    heads, dim = query.shape[1], query.shape[3]
    rows, width = segments.rows, segments.width

    def padded(states):  # (1, h, tokens, dim) -> (rows, h, width, dim)
        h = states.shape[1]
        picked = states[0].index_select(1, segments.padded)
        return picked.view(h, rows, width, dim).transpose(0, 1)

    # Query head h reads key/value head h // group: each key/value head's queries as one
    # (group x width) block of rows, so keys and values are never copied per query head.
    kv_heads = key.shape[1]
    group = heads // kv_heads
    q = padded(query * scaling).reshape(rows, kv_heads, group * width, dim)
    k, v = padded(key), padded(value)
    scores = torch.matmul(q, k.transpose(-1, -2))  # (rows, kv_heads, group * width, width)
    # The same mask for every query head of a group: a broadcast view, not a copy per layer.
    scores = (
        scores.view(rows, kv_heads, group, width, width)
        .masked_fill(segments.hidden[:, :, None], float("-inf"))
        .view(rows, kv_heads, group * width, width)
    )
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    out = torch.matmul(probs, v).view(rows, heads, width, dim)
    out = out.transpose(1, 2).reshape(rows * width, heads, dim).index_select(0, segments.flat)
    return out[None], None


AttentionInterface.register(SEGMENT_ATTENTION, _segment_attention)
# Without `segments` the attention is SDPA's, so it needs SDPA's masks (padding, packing).
AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)
