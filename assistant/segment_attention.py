"""Linear layers over ONE flat row of packed groups, attention group by group.

A packed group (`assistant.pm.packed_inputs`) is a shared prefix, then each response; a
response attends causally to itself and to the prefix, never to its siblings. Padded to one row
per group, a batch of eight HH pairs carried ~15 % padding through every linear layer, norm and
activation (bench/pm_training.py: 38,352 computed tokens for 32,553 real ones).

Here the groups of a batch sit back to back in one row with no padding (`flat_pack_ids`), which
is what the projections, the MLPs and the norms see. Attention takes each group's slice of that
row as it is (a view: no gather, no padding) and adds the group's block mask inside the score
matmul (`baddbmm`), so no masked copy of the scores is made and the backward has no pass for
it; the softmax stays in the scores' dtype (bf16 under autocast: the CPU kernel accumulates in
float32 and rounds once). That is exactly the block mask of `packed_inputs` (tests compare
rewards and gradients), for the architectures whose attention is plain causal softmax attention
(`can_use_segments`).

Measured on a 2-core AVX-512 EPYC, bf16 autocast, forward + backward of one layer's attention
for eight groups of ~590 tokens (BENCHMARKS.md): the earlier version of this module (the groups
gathered into padded rows, `masked_fill`, a float32 softmax) 90-115 ms, this 59-65 ms; a
160-pair training run 1.63 -> 1.85 pairs/s and peak RSS 12.9 -> 8.4 GB. Tried and slower: SDPA
per group (its CPU backward dominating); splitting each group into its prefix and one block per
response (less masked work, more small ops: no faster).

Switch a backbone to it with `set_attn_implementation(SEGMENT_ATTENTION)` (the trainer's
"auto" does on a CPU); without `segments` the function is plain SDPA, so a switched model still
scores padded batches as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
    """The groups of a flat row of packed tokens: where each begins and ends, who in it may
    attend to whom, and where each token sits in `assistant.pm.pack_ids`' padded layout.

    `spans[r]` is (start, length) of group r in the flat row (the groups lie back to back);
    `blocks[r]` (length x length, True = may attend) is `pack_ids`' block mask of that group
    without its padding; `flat[i]` is flat token i's slot in the padded rows (`rows` x `width`),
    which `flat_pack_ids` reads the rows through.
    """

    spans: tuple[tuple[int, int], ...]
    blocks: tuple[torch.Tensor, ...]
    flat: torch.Tensor
    rows: int
    width: int
    # Each group's additive mask as the attention adds it, made once a batch per
    # (query heads per key/value head, dtype, device) and shared by every layer.
    _biases: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def length(self) -> int:
        return self.flat.numel()

    def to(self, device) -> Segments:
        return Segments(
            self.spans, tuple(block.to(device) for block in self.blocks), self.flat.to(device),
            self.rows, self.width,
        )  # fmt: skip

    def biases(self, group: int, dtype: torch.dtype, device) -> list[torch.Tensor]:
        """Per group, 0 where a query may attend and -inf where not, its rows repeated for the
        `group` query heads that share a key/value head: (group * length) x length."""
        key = (group, dtype, str(device))
        if key not in self._biases:
            made = []
            for block in self.blocks:
                bias = torch.zeros(block.shape, dtype=dtype, device=device)
                bias.masked_fill_(~block.to(device), float("-inf"))
                made.append(bias.repeat(group, 1))
            self._biases[key] = made
        return self._biases[key]


def segments_of(grouped: Sequence[tuple[list[int], list[list[int]]]], mask: torch.Tensor):
    """The layout of `grouped` (`assistant.pm.group_ids`: prefix ids, each response's ids) laid
    back to back, one group after another, given `pack_ids`' block mask of the same groups."""
    rows, width = len(grouped), mask.shape[-1]
    spans, blocks, flat, at = [], [], [], 0
    for row, (prefix, own) in enumerate(grouped):
        if not own:
            raise ValueError("a packed group needs at least one response")
        length = len(prefix) + sum(map(len, own))
        spans.append((at, length))
        blocks.append(mask[row, 0, :length, :length].clone())
        flat.append(torch.arange(row * width, row * width + length))
        at += length
    return Segments(tuple(spans), tuple(blocks), torch.cat(flat), rows, width)


def _segment_attention(
    module, query, key, value, attention_mask, *, scaling, dropout=0.0, segments=None, **kwargs
):
    """Attention of a flat row, group by group under its block mask (module docstring); SDPA
    without `segments`.

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
    # Query head h reads key/value head h // group: each key/value head's queries as one
    # (group x length) block of rows, so keys and values are never copied per query head.
    kv_heads = key.shape[1]
    group = heads // kv_heads
    # Under autocast the matmuls compute in its dtype; the rotary embedding hands the queries
    # and keys over in float32 (its cos/sin follow the float32 embeddings). Cast the row once,
    # not each group's slice, and make the masks in that dtype so autocast casts none of them.
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    query, key, value = (states[0].to(dtype or states.dtype) for states in (query, key, value))
    biases = segments.biases(group, query.dtype, query.device)
    outputs = []
    for (start, length), bias in zip(segments.spans, biases, strict=True):
        end = start + length
        q = query[:, start:end].reshape(kv_heads, group * length, dim)
        # The mask added and the scale applied by the matmul itself: no masked copy of the
        # scores nor a scaled one of the queries, and no pass for either in the backward.
        scores = torch.baddbmm(bias, q, key[:, start:end].transpose(-1, -2), alpha=scaling)
        # In the scores' dtype: the CPU kernel accumulates bf16 in float32 and rounds once, so
        # the probabilities equal a float32 softmax's rounded, without a float32 copy.
        probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
        out = torch.bmm(probs, value[:, start:end])  # (kv_heads, group * length, dim)
        outputs.append(out.view(heads, length, dim).transpose(0, 1))
    return torch.cat(outputs)[None], None


# Never traced: under compiled layers (training/compiled.py) its loop over the groups would
# recompile every batch; each layer compiles around it instead.
AttentionInterface.register(SEGMENT_ATTENTION, torch.compiler.disable(_segment_attention))
# Without `segments` the attention is SDPA's, so it needs SDPA's masks (padding, packing).
AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)
