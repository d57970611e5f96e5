"""The preference model on tiny random backbones: EOC reading, truncation, save/load, scoring."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from assistant import pm
from assistant.backends.base import Message
from assistant.pm import (
    EOC_TOKEN,
    PMScorer,
    PreferenceModel,
    format_for_pm,
    load_pm,
    packed_inputs,
    pm_inputs,
    save_pm,
)
from tests.tinymodels import tiny_causal_lm, tiny_encoder

LONG = " ".join(["Human: Can you help me write a poem about the sea?"] * 12)
CONVERSATION = [Message("user", "What is the capital of France?")]


@pytest.fixture(params=["decoder", "encoder"])
def pm_model(request, tokenizer):
    """A fresh tiny PM and its own tokenizer copy (adding EOC must not touch the session one)."""
    tok = copy.deepcopy(tokenizer)
    build = tiny_causal_lm if request.param == "decoder" else tiny_encoder
    torch.manual_seed(1)  # the head's initialisation
    model = PreferenceModel.from_backbone(build(tok), tok, max_length=64).eval()
    return model, tok


def rewards(model, tokenizer, texts, padding_side="right"):
    batch = pm_inputs(
        tokenizer,
        texts,
        eoc_token_id=model.eoc_token_id,
        max_length=model.max_length,
        padding_side=padding_side,
    )
    with torch.no_grad():
        return model(**batch)


def test_format_for_pm_renders_hh_transcripts():
    messages = [
        Message("user", "Hi"),
        {"role": "assistant", "content": " Hello! "},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert format_for_pm(messages, " Paris.\n") == (
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of France?\n\nAssistant: Paris."
    )
    with pytest.raises(ValueError, match="system"):
        format_for_pm([{"role": "system", "content": "x"}], "y")


def test_pm_inputs_appends_eoc_and_truncates_from_the_left(pm_model):
    model, tok = pm_model
    ids = tok(LONG, add_special_tokens=False)["input_ids"]
    assert len(ids) > 16
    batch = pm_inputs(tok, [LONG, "Hi"], eoc_token_id=model.eoc_token_id, max_length=16)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == ids[-15:] + [model.eoc_token_id]
    hi = len(tok("Hi", add_special_tokens=False)["input_ids"]) + 1  # + EOC
    assert batch["attention_mask"][1].tolist() == [1] * hi + [0] * (16 - hi)  # right-padded
    assert tok.convert_ids_to_tokens(model.eoc_token_id) == EOC_TOKEN

    left = pm_inputs(
        tok, [LONG, "Hi"], eoc_token_id=model.eoc_token_id, max_length=16, padding_side="left"
    )
    assert left["input_ids"][1, -1].item() == model.eoc_token_id
    assert left["attention_mask"][1].tolist() == [0] * (16 - hi) + [1] * hi


def test_reward_is_read_at_the_eoc_token(pm_model):
    model, tok = pm_model
    text = format_for_pm(CONVERSATION, "The capital of France is Paris.")
    alone = rewards(model, tok, [text])[0]

    # Padding does not move the score, on either side, next to a much longer row.
    for side in ("right", "left"):
        batched = rewards(model, tok, [LONG, text], padding_side=side)[1]
        assert abs(batched.item() - alone.item()) < 1e-5

    # A token before the EOC changes the score ...
    other = format_for_pm(CONVERSATION, "The capital of France is Lyon.")
    assert abs(rewards(model, tok, [other])[0].item() - alone.item()) > 1e-6

    # ... while text cut away by left truncation cannot.
    assert len(tok(LONG, add_special_tokens=False)["input_ids"]) >= model.max_length
    first, second = rewards(model, tok, ["Human: Hi." + LONG, "Sea poem." + LONG])
    assert first.item() == pytest.approx(second.item(), abs=1e-6)


def test_padding_with_eos_is_harmless(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None  # Llama-style: from_backbone falls back to EOS for padding
    model = PreferenceModel.from_backbone(tiny_causal_lm(tokenizer), tok).eval()
    assert tok.pad_token_id == tok.eos_token_id
    text = "Human: Hi<|endoftext|>\n\nAssistant: Hello.<|endoftext|>"
    alone = rewards(model, tok, [text])[0].item()
    for side in ("right", "left"):
        assert rewards(model, tok, [LONG, text], padding_side=side)[1].item() == pytest.approx(
            alone, abs=1e-5
        )


def test_forward_rejects_rows_that_do_not_end_in_eoc(pm_model):
    model, tok = pm_model
    ids = torch.tensor([tok("Hello there", add_special_tokens=False)["input_ids"]])
    with pytest.raises(ValueError, match="end-of-context"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))


def test_from_backbone_loads_a_folder_without_its_lm_head(tiny_lm_path, tokenizer):
    model = PreferenceModel.from_backbone(tiny_lm_path)
    assert type(model.backbone).__name__ == "LlamaModel"
    assert model.backbone.get_input_embeddings().num_embeddings == len(tokenizer) + 1
    reference = tiny_causal_lm(tokenizer).model.embed_tokens.weight
    assert torch.equal(model.backbone.get_input_embeddings().weight[: len(tokenizer)], reference)
    assert model.max_length == 512  # the backbone's context, under the default cap


def test_save_load_round_trip(pm_model, tmp_path):
    model, tok = pm_model
    texts = [format_for_pm(CONVERSATION, "Paris."), LONG, "short"]
    meta = {"training_run_id": 7, "dataset_snapshot": "sha256:abc", "metrics": {"acc": 0.5}}
    target = tmp_path / "pms" / "pm-7"
    save_pm(model, tok, target, meta)

    loaded, loaded_tok, loaded_meta = load_pm(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["pm-7"]  # no temp dirs left
    assert (target / "model.safetensors").exists() and (target / "config.json").exists()
    assert loaded_meta == json.loads((target / "meta.json").read_text())
    assert loaded_meta["training_run_id"] == 7 and loaded_meta["metrics"] == {"acc": 0.5}
    assert loaded_meta["eoc_token"] == EOC_TOKEN and loaded_meta["max_length"] == 64
    assert loaded_meta["backbone"]["kind"] in ("decoder", "encoder")
    assert loaded_meta["backbone"]["arch"] == type(model.backbone).__name__
    assert PMScorer(loaded, loaded_tok).score(texts) == PMScorer(model, tok).score(texts)

    # Saving over an existing model replaces it whole.
    save_pm(model, tok, target, {**meta, "training_run_id": 8})
    assert load_pm(target)[2]["training_run_id"] == 8
    assert sorted(p.name for p in target.parent.iterdir()) == ["pm-7"]


def test_a_failed_save_leaves_no_partial_folder(pm_model, tmp_path, monkeypatch):
    model, tok = pm_model
    save_pm(model, tok, tmp_path / "kept", {"training_run_id": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pm, "save_model", crash)
    for name in ("new", "kept"):
        with pytest.raises(OSError, match="disk full"):
            save_pm(model, tok, tmp_path / name, {"training_run_id": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert load_pm(tmp_path / "kept")[2]["training_run_id"] == 1


def test_score_returns_input_order(pm_model):
    model, tok = pm_model
    texts = ["a", LONG, "The capital of France is Paris.", LONG[:40], "I'm not sure."]
    scorer = PMScorer(model, tok, batch_size=2, bf16=False)  # float32: batches agree to 1e-5
    one_by_one = [scorer.score([text])[0] for text in texts]
    assert scorer.score(texts) == pytest.approx(one_by_one, abs=1e-5)
    assert scorer.score([]) == []
    assert PMScorer(model, tok, bf16=True).score(texts) == pytest.approx(one_by_one, abs=0.2)


def test_a_few_steps_on_a_pair_rank_better_above_worse(pm_model):
    model, tok = pm_model
    better = format_for_pm(CONVERSATION, "The capital of France is Paris.")
    worse = format_for_pm(CONVERSATION, "I don't know, maybe Lyon.")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = pm_inputs(tok, [better, worse], eoc_token_id=model.eoc_token_id, max_length=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(5):
        r_better, r_worse = model(**batch)
        loss = F.softplus(r_worse - r_better)  # log(1 + exp(r_worse - r_better))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    r_better, r_worse = rewards(model, tok, [better, worse])
    assert r_better > r_worse
    unchanged = {n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])}
    # A pairwise loss sees only r_better - r_worse, so a constant added to every reward (the
    # head's bias, and BERT's last LayerNorm bias through the head) gets no gradient.
    assert unchanged <= {"head.bias", "backbone.encoder.layer.1.output.LayerNorm.bias"}


def _decoder_pm(tokenizer, max_length=64):
    tok = copy.deepcopy(tokenizer)
    torch.manual_seed(1)
    return PreferenceModel.from_backbone(
        tiny_causal_lm(tok), tok, max_length=max_length
    ).eval(), tok


PACK_GROUPS = [
    (
        format_for_pm(CONVERSATION, "").rstrip(),
        [" Paris.", " It is Paris, on the Seine.", " I don't know."],
    ),
    (format_for_pm([], "").rstrip(), [" Hello there", " Hi"]),
]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_score_each_response_as_its_own_row_would(tokenizer, attention):
    model, tok = _decoder_pm(tokenizer)
    model.backbone.config._attn_implementation = attention
    packed = packed_inputs(tok, PACK_GROUPS, eoc_token_id=model.eoc_token_id, max_length=64)
    rows, width = packed["input_ids"].shape
    assert rows == 2  # one row per group
    assert packed["attention_mask"].shape == (2, 1, width, width)
    texts = [prefix + response for prefix, responses in PACK_GROUPS for response in responses]
    with torch.no_grad():
        together = model(**packed)
    torch.testing.assert_close(together, rewards(model, tok, texts), atol=1e-5, rtol=0)
    # The shared prefix is stored once: fewer tokens than one row per response.
    assert (
        packed["input_ids"].shape[1] * 2
        < pm_inputs(tok, texts, eoc_token_id=model.eoc_token_id, max_length=64)[
            "attention_mask"
        ].sum()
    )


def test_packed_mask_hides_siblings_and_padding_attends_only_to_itself(tokenizer):
    model, tok = _decoder_pm(tokenizer)
    packed = packed_inputs(tok, PACK_GROUPS, eoc_token_id=model.eoc_token_id, max_length=64)
    mask = packed["attention_mask"][:, 0]
    (row, first_eoc), (_, second_eoc) = packed["reward_index"][:2].tolist()
    first_len = len(tok(" Paris.", add_special_tokens=False)["input_ids"]) + 1  # + EOC
    first = slice(first_eoc + 1 - first_len, first_eoc + 1)
    second = slice(first_eoc + 1, second_eoc + 1)
    assert mask[row, first, : first.start].all()  # a response sees the whole prefix
    assert mask[row, second, : first.start].all()
    assert not mask[row, second, first].any()  # but never its sibling
    assert not mask[row, first, second].any()
    assert packed["position_ids"][row, first.start] == packed["position_ids"][row, second.start]
    # Row 1 is shorter than row 0: its padding sees only itself (no NaN from SDPA).
    width = mask.shape[-1]
    real = packed["reward_index"][-1, 1].item() + 1
    assert real < width
    assert torch.equal(mask[1, real:, :], torch.eye(width, dtype=torch.bool)[real:])
    with torch.no_grad():
        assert torch.isfinite(model(**packed)).all()


def test_packed_truncation_keeps_every_response_and_cuts_the_shared_prefix(tokenizer):
    model, tok = _decoder_pm(tokenizer, max_length=16)
    prefix = format_for_pm([{"role": "user", "content": LONG}], "").rstrip()
    responses = [" Sure.", " Here is a poem about the sea."]
    packed = packed_inputs(
        tok, [(prefix, responses)], eoc_token_id=model.eoc_token_id, max_length=16
    )
    own = [tok(r, add_special_tokens=False)["input_ids"] + [model.eoc_token_id] for r in responses]
    window = 16 - max(map(len, own))
    prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    assert packed["input_ids"][0].tolist() == prefix_ids[-window:] + own[0] + own[1]
    # Each response then scores as a row of (the same cut prefix + itself) would.
    rows = [prefix_ids[-window:] + ids for ids in own]
    flat = pm._pad(rows, tok.pad_token_id, "right")
    with torch.no_grad():
        torch.testing.assert_close(model(**packed), model(**flat), atol=1e-5, rtol=0)


def test_packed_inputs_need_a_causal_decoder(tokenizer):
    model, tok = _decoder_pm(tokenizer)
    assert model.can_pack
    enc_tok = copy.deepcopy(tokenizer)
    encoder = PreferenceModel.from_backbone(tiny_encoder(enc_tok), enc_tok, max_length=64)
    assert not encoder.can_pack  # bidirectional: a shared prefix would see every response
    packed = packed_inputs(tok, PACK_GROUPS, eoc_token_id=model.eoc_token_id, max_length=64)
    with pytest.raises(ValueError, match="position_ids and reward_index"):
        model(packed["input_ids"], packed["attention_mask"])


def test_score_groups_matches_scoring_each_transcript(pm_model):
    model, tok = pm_model  # decoder: packed rows; encoder: one row per response
    groups = [
        (CONVERSATION, [" Paris.", "It is Paris, on the Seine.", "I don't know."]),
        ([], ["Hello there", "Hi"]),
        ([Message("user", LONG)], ["Sure.", "A poem about the sea and its long grey waves."]),
    ]
    # Several batches; float32, as the 1e-5 below is no bound for bf16 (the default where native).
    scorer = PMScorer(model, tok, batch_size=2, batch_tokens=40, bf16=False)
    grouped = scorer.score_groups(groups)
    flat = scorer.score([format_for_pm(m, r) for m, responses in groups for r in responses])
    assert [len(g) for g in grouped] == [3, 2, 2]
    # The long group is cut to fit: packed rows cut its shared prefix for the longest response.
    assert sum(grouped[:2], []) == pytest.approx(flat[:5], abs=1e-5)
    assert model.can_pack == (model.backbone.config.model_type == "llama")


def test_score_groups_batches_by_padded_tokens(pm_model):
    scorer = PMScorer(*pm_model, batch_tokens=100)
    lengths = [10, 60, 30, 120, 25, 20, 5]
    batches = scorer._token_batches(lengths)
    assert batches == [[3], [1], [2, 4, 5], [0, 6]]  # longest first; rows x widest <= 100
    assert sorted(sum(batches, [])) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= 100


def test_the_scorer_autocasts_to_bf16_only_where_the_device_computes_it(
    pm_model, monkeypatch, caplog, settings
):
    from assistant import hardware

    settings.ALIGNLAB_BF16 = "auto"  # the probe decides, whatever the environment says
    model, tok = pm_model
    texts = ["a", LONG, "The capital of France is Paris."]
    groups = [(CONVERSATION, ["Paris.", "Lyon, I think."])]
    float32 = PMScorer(model, tok, bf16=False)
    bf16 = PMScorer(model, tok, bf16=True)
    assert bf16.score(texts) != float32.score(texts)  # bf16 rounding shows in the scores

    monkeypatch.setattr(hardware, "_probe", lambda device_type: False)  # an AVX2-only CPU
    assert PMScorer(model, tok).score(texts) == float32.score(texts)
    assert PMScorer(model, tok).score_groups(groups) == float32.score_groups(groups)
    with caplog.at_level("WARNING", logger="assistant.pm"):
        PMScorer(model, tok, bf16=True)
    assert "far slower" in caplog.text

    monkeypatch.setattr(hardware, "_probe", lambda device_type: True)
    assert PMScorer(model, tok).score(texts) == bf16.score(texts)
    with pytest.raises(ValueError, match="bf16 must be"):
        PMScorer(model, tok, bf16="yes")
