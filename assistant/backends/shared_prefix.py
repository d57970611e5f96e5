"""Attention that reads a prompt prefix's keys/values once for the whole batch of samples.

`TransformersBackend` switches a model to it (`set_attn_implementation(SHARED_PREFIX_ATTENTION)`)
when `can_share_prefix` says the architecture's own attention is what this computes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from .packed_linear import product, reorder_matrices

# Attention that reads the prompt prefix's keys/values once for the whole batch (below).
SHARED_PREFIX_ATTENTION = "alignlab_shared_prefix"
# Architectures whose attention is plain causal softmax attention over the cache, so the
# shared-prefix function computes exactly what their own does. Others copy the prefix per row.
SHARED_PREFIX_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


class PrefixLayer(NamedTuple):
    """One layer's keys/values of the shared prefix, (1, kv_heads, prefix, dim) each, read-only."""

    keys: torch.Tensor
    values: torch.Tensor
    # Each key/value head's keys reordered for oneDNN (packed_linear.reorder_matrices), where
    # the backend computes float32 on a CPU through it; None: a batched matmul over `keys`.
    packed_keys: list[torch.Tensor] | None = None


# Prefixes shorter than this keep the batched matmul for their query-key products: oneDNN's
# products cost a fixed ~0.07 ms more a call (90 a step for SmolLM2-135M), which only a long
# prefix repays. On an AVX2-only CPU (bench/attention_rows.py, 2 samples): slower at 512-2,048
# tokens, about even at 3,072-4,096, faster at 5,415 (the HHH prompt).
PACKED_KEYS_MIN_TOKENS = 4096


def prefix_layers(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    reorder_keys: bool,
    min_tokens: int | None = None,
) -> list[PrefixLayer]:
    """Each layer's (keys, values) of a prefix as `PrefixLayer`s; with `reorder_keys`, every
    key/value head's keys reordered for oneDNN too, where the prefix has at least `min_tokens`
    tokens (default PACKED_KEYS_MIN_TOKENS) and oneDNN can reorder them."""
    if min_tokens is None:
        min_tokens = PACKED_KEYS_MIN_TOKENS
    packed = None
    if reorder_keys and layers and layers[0][0].shape[2] >= min_tokens:
        # One (prefix, dim) matrix per layer and key/value head.
        packed = reorder_matrices([head for keys, _ in layers for head in keys[0]])
    heads = layers[0][0].shape[1] if layers else 0
    return [
        PrefixLayer(keys, values, packed[i * heads : (i + 1) * heads] if packed else None)
        for i, (keys, values) in enumerate(layers)
    ]


def can_share_prefix(config) -> bool:
    """Whether a model of this config may use the shared-prefix attention."""
    text = config.get_text_config()
    sliding = getattr(text, "sliding_window", None) is not None and getattr(
        text, "use_sliding_window", True
    )
    return text.model_type in SHARED_PREFIX_MODEL_TYPES and not sliding


def _shared_prefix_attention(
    module, query, key, value, attention_mask, *, scaling, dropout=0.0, shared_prefix=None, **kwargs
):
    """Causal attention over a prompt prefix held once for the batch, then each row's own keys.

    Copying a 5k-token prefix into every row made each sample re-read it at every step, which
    cost more than the model's weights; here one matmul per key/value head serves all rows.
    Without `shared_prefix` it is plain SDPA.
    """
    if shared_prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    prefix_keys, prefix_values, packed_keys = shared_prefix[module.layer_idx]
    batch, heads, length, dim = query.shape
    kv_heads, prefix = prefix_keys.shape[1], prefix_keys.shape[2]
    rows = heads // kv_heads * length  # queries per key/value head, per batch row
    # Query head h reads key/value head h // group: group them as rows of one matrix.
    grouped = query.reshape(batch, kv_heads, rows, dim)
    stacked = grouped.transpose(0, 1).reshape(kv_heads, batch * rows, dim)
    if packed_keys is not None and query.dtype == torch.float32:
        prefix_scores = torch.stack(
            [product(stacked[h].contiguous(), packed_keys[h]) for h in range(kv_heads)]
        )
    else:
        prefix_scores = stacked @ prefix_keys[0].transpose(-1, -2)
    prefix_scores = prefix_scores.reshape(kv_heads, batch, rows, prefix)
    own_scores = grouped @ key.transpose(-1, -2)  # (batch, kv_heads, rows, own)
    own = key.shape[-2]
    # New token i sits at own position own - length + i and sees own positions up to it.
    future = torch.arange(own, device=query.device)[None, :] > (
        own - length + torch.arange(length, device=query.device)[:, None]
    )
    own_scores = own_scores.masked_fill(future.repeat(heads // kv_heads, 1), float("-inf"))
    scores = torch.cat([prefix_scores.transpose(0, 1), own_scores], dim=-1).float() * scaling
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    prefix_probs = probs[..., :prefix].transpose(0, 1).reshape(kv_heads, batch * rows, prefix)
    out = (prefix_probs @ prefix_values[0]).reshape(kv_heads, batch, rows, dim).transpose(0, 1)
    out = out + probs[..., prefix:] @ value
    return out.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(SHARED_PREFIX_ATTENTION, _shared_prefix_attention)
AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, sdpa_mask)
