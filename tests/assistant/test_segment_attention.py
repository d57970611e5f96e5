"""Flat packed rows under the segment attention: the same rewards and gradients as the block
mask of `packed_inputs`, no padding, and clear errors where the pieces do not fit."""

from __future__ import annotations

import copy

import pytest
import torch

from assistant.pm import (
    PreferenceModel,
    flat_pack_ids,
    format_for_pm,
    group_ids,
    pack_ids,
    pm_inputs,
)
from assistant.segment_attention import SEGMENT_ATTENTION, can_use_segments, segments_of
from tests.tinymodels import tiny_causal_lm, tiny_encoder

GROUPS = [
    (
        format_for_pm([], "").rstrip() + " What is the capital of France?\n\nAssistant:",
        [" Paris.", " It is Paris, on the Seine.", " I don't know."],
    ),
    (format_for_pm([], "").rstrip(), [" Hello there", " Hi"]),
    ("\n\nHuman: Short\n\nAssistant:", [" A much longer answer than the question was", " B"]),
]


def _pm(tokenizer, max_length=64):
    tok = copy.deepcopy(tokenizer)
    torch.manual_seed(1)
    return PreferenceModel.from_backbone(tiny_causal_lm(tok), tok, max_length=max_length), tok


def _rows(model, tok, groups=GROUPS, max_length=64):
    return group_ids(tok, groups, eoc_token_id=model.eoc_token_id, max_length=max_length)


def test_flat_rows_have_no_padding_and_the_layout_covers_them(tokenizer):
    model, tok = _pm(tokenizer)
    grouped = _rows(model, tok)
    flat = flat_pack_ids(grouped, tok.pad_token_id)
    real = sum(len(prefix) + sum(map(len, own)) for prefix, own in grouped)
    assert flat["input_ids"].shape == (1, real)
    assert flat["segments"].length == real
    blocks = pack_ids(grouped, tok.pad_token_id)
    assert blocks["input_ids"].numel() > real  # the padded rows carry padding the flat row does not
    # The flat row is the padded rows' real tokens, in order.
    real_slots = blocks["input_ids"].view(-1)[flat["segments"].flat]
    assert torch.equal(real_slots, flat["input_ids"][0])
    # Every EOC where the reward is read; a response's positions continue from its prefix.
    assert (flat["input_ids"][0, flat["reward_index"][:, 1]] == model.eoc_token_id).all()
    prefix = len(grouped[0][0])
    first, second = prefix, prefix + len(grouped[0][1][0])
    positions = flat["position_ids"][0]
    assert positions[first] == positions[second] == prefix


def test_flat_rows_score_as_the_block_mask_and_as_one_row_per_response(tokenizer):
    model, tok = _pm(tokenizer)
    model.eval()
    grouped = _rows(model, tok)
    texts = [prefix + response for prefix, responses in GROUPS for response in responses]
    with torch.no_grad():
        model.backbone.set_attn_implementation("sdpa")
        one_each = model(**pm_inputs(tok, texts, eoc_token_id=model.eoc_token_id, max_length=64))
        blocks = model(**pack_ids(grouped, tok.pad_token_id))
        model.backbone.set_attn_implementation(SEGMENT_ATTENTION)
        flat = model(**flat_pack_ids(grouped, tok.pad_token_id))
    torch.testing.assert_close(flat, blocks, atol=1e-5, rtol=0)
    torch.testing.assert_close(flat, one_each, atol=1e-5, rtol=0)


def test_flat_rows_give_the_block_masks_gradients(tokenizer):
    model, tok = _pm(tokenizer)
    grouped = _rows(model, tok)
    weights = torch.linspace(-1.0, 1.0, sum(len(own) for _, own in grouped))

    def gradients(attention, batch):
        model.zero_grad(set_to_none=True)
        model.backbone.set_attn_implementation(attention)
        (model(**batch) * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    blocks = gradients("eager", pack_ids(grouped, tok.pad_token_id))
    flat = gradients(SEGMENT_ATTENTION, flat_pack_ids(grouped, tok.pad_token_id))
    assert blocks.keys() == flat.keys()
    for name in blocks:
        torch.testing.assert_close(flat[name], blocks[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_group_whose_prefix_was_cut_away_still_scores(tokenizer):
    # A response as long as max_length leaves no room for the prefix.
    model, tok = _pm(tokenizer, max_length=8)
    model.eval()
    groups = [("\n\nHuman: Hi\n\nAssistant:", [" one two three four five six seven", " b"])]
    grouped = _rows(model, tok, groups, max_length=8)
    assert grouped[0][0] == []
    with torch.no_grad():
        model.backbone.set_attn_implementation("sdpa")
        blocks = model(**pack_ids(grouped, tok.pad_token_id))
        model.backbone.set_attn_implementation(SEGMENT_ATTENTION)
        flat = model(**flat_pack_ids(grouped, tok.pad_token_id))
    torch.testing.assert_close(flat, blocks, atol=1e-5, rtol=0)


def test_without_segments_the_attention_is_sdpa(tokenizer):
    model, tok = _pm(tokenizer)
    model.eval()
    texts = ["\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hi\n\nAssistant: A longer reply here"]
    for side in ("right", "left"):
        batch = pm_inputs(tok, texts, eoc_token_id=model.eoc_token_id, max_length=64,
                          padding_side=side)  # fmt: skip
        with torch.no_grad():
            model.backbone.set_attn_implementation("sdpa")
            expected = model(**batch)
            model.backbone.set_attn_implementation(SEGMENT_ATTENTION)
            torch.testing.assert_close(model(**batch), expected, atol=1e-6, rtol=0)


def test_segments_need_the_segment_attention_and_a_matching_row(tokenizer):
    model, tok = _pm(tokenizer)
    flat = flat_pack_ids(_rows(model, tok), tok.pad_token_id)
    model.backbone.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="needs the 'alignlab_segments' attention"):
        model(**flat)
    model.backbone.set_attn_implementation(SEGMENT_ATTENTION)
    shorter = flat_pack_ids(_rows(model, tok, GROUPS[:1]), tok.pad_token_id)
    with pytest.raises(ValueError, match="segments describe one row of"):
        model(**{**flat, "segments": shorter["segments"]})
    with pytest.raises(ValueError, match="at least one response"):
        segments_of([([1, 2], [])], torch.ones(1, 1, 2, 2, dtype=torch.bool))


def test_only_plain_causal_decoders_use_segments(tokenizer):
    decoder = tiny_causal_lm(tokenizer).config
    assert can_use_segments(decoder)
    assert not can_use_segments(tiny_encoder(tokenizer).config)
    windowed = copy.deepcopy(decoder)
    windowed.model_type, windowed.sliding_window = "mistral", 16
    assert not can_use_segments(windowed)


def test_under_bf16_autocast_the_flat_rows_score_as_the_block_mask(tokenizer):
    # The mask is added inside the bf16 score matmul and the softmax runs in bf16 (float32
    # accumulation): the rewards stay those of the float32-softmax eager block mask, to bf16's
    # precision, and every layer shares the one mask the batch made.
    model, tok = _pm(tokenizer)
    model.eval()
    grouped = _rows(model, tok)
    flat = flat_pack_ids(grouped, tok.pad_token_id)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.backbone.set_attn_implementation("eager")
        blocks = model(**pack_ids(grouped, tok.pad_token_id))
        model.backbone.set_attn_implementation(SEGMENT_ATTENTION)
        rewards = model(**flat)
    torch.testing.assert_close(rewards, blocks, atol=0.05, rtol=0.02)
    made = flat["segments"]._biases
    assert list(made) == [(2, torch.bfloat16, "cpu")]  # the tiny model: 4 query heads, 2 kv
    assert all(bias.dtype == torch.bfloat16 for bias in made[(2, torch.bfloat16, "cpu")])
