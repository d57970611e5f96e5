"""Rankings → batches: the collator (one padded tensor, left truncation) and the sampler."""

import copy

import pytest
import torch

from assistant.pm import PreferenceModel
from tests.tinymodels import tiny_causal_lm, tiny_tokenizer
from training.data import LengthGroupedBatchSampler, Ranking, RankingCollator, RankingDataset


@pytest.fixture(scope="module")
def pm_and_tokenizer():
    tokenizer = copy.deepcopy(tiny_tokenizer())  # from_backbone adds EOC to it
    torch.manual_seed(0)
    model = PreferenceModel.from_backbone(tiny_causal_lm(tokenizer), tokenizer, max_length=64)
    return model.eval(), tokenizer


def rankings():
    return [
        Ranking(
            ["Paris.", "Lyon, I think.", "I don't know."],
            [0, 1, 2],
            context=[{"role": "user", "content": "What is the capital of France?"}],
        ),
        Ranking(
            ["Sure, here is a poem about the sea and its waves.", "No."],
            [0, 1],
            context_text="\n\nHuman: Can you help me write a poem?",
            strength=4,
        ),
    ]


def test_ranking_renders_context_messages_and_text_alike():
    by_messages = Ranking(["B", "A"], [0, 1], context=[{"role": "user", "content": "Q"}])
    by_text = Ranking(["B", "A"], [0, 1], context_text="\n\nHuman: Q")
    assert (
        by_messages.texts()
        == by_text.texts()
        == ["\n\nHuman: Q\n\nAssistant: B", "\n\nHuman: Q\n\nAssistant: A"]
    )
    assert by_messages.prefix() == "\n\nHuman: Q\n\nAssistant:"
    with pytest.raises(ValueError, match="ranks"):
        Ranking(["a", "b"], [0])


def test_collator_puts_all_responses_in_one_dynamically_padded_batch(pm_and_tokenizer):
    model, tokenizer = pm_and_tokenizer
    collate = RankingCollator(
        tokenizer, eoc_token_id=model.eoc_token_id, max_length=64, margin_scale=1.0
    )
    batch = collate(rankings())
    assert batch["input_ids"].shape[0] == 5  # 3 + 2 responses, one forward
    assert batch["group"].tolist() == [0, 0, 0, 1, 1]
    assert batch["ranks"].tolist() == [0, 1, 2, 0, 1]
    assert batch["margin"].tolist() == [0.0, 1.0]  # no strength → 0; "much better" → scale
    lengths = batch["attention_mask"].sum(-1)
    assert batch["input_ids"].shape[1] == lengths.max() < 64  # padded to the longest, not 64
    with torch.no_grad():
        rewards = model(batch["input_ids"], batch["attention_mask"])
    assert rewards.shape == (5,)
    # The same texts scored one at a time give the same rewards: padding changes nothing.
    single = collate(rankings()[:1])
    with torch.no_grad():
        alone = model(single["input_ids"], single["attention_mask"])
    assert torch.allclose(alone, rewards[:3], atol=1e-5)


def test_collator_truncates_from_the_left_keeping_the_response_end_and_eoc(pm_and_tokenizer):
    model, tokenizer = pm_and_tokenizer
    long_context = " ".join(["Human: Can you help me write a poem about the sea?"] * 20)
    ranking = Ranking(
        ["The answer is Paris.", "The answer is Lyon."],
        [0, 1],
        context=[{"role": "user", "content": long_context}],
    )
    batch = RankingCollator(tokenizer, eoc_token_id=model.eoc_token_id, max_length=24)([ranking])
    assert batch["input_ids"].shape == (2, 24)
    assert (batch["input_ids"][:, -1] == model.eoc_token_id).all()
    for row, response in zip(batch["input_ids"], ranking.responses, strict=True):
        assert tokenizer.decode(row[:-1]).endswith(response)
    assert batch["input_ids"][0].tolist() != batch["input_ids"][1].tolist()


def test_collator_response_mask_marks_the_response_tokens(pm_and_tokenizer):
    _, tokenizer = pm_and_tokenizer
    collate = RankingCollator(
        tokenizer, eoc_token_id=tokenizer.eos_token_id, max_length=64, response_mask=True
    )
    batch = collate(rankings()[:1])
    for row, mask, response in zip(
        batch["input_ids"], batch["response_mask"], rankings()[0].responses, strict=True
    ):
        assert tokenizer.decode(row[mask]) == f" {response}{tokenizer.eos_token}"


def test_length_grouped_sampler_is_deterministic_and_covers_every_index_once():
    lengths = [(i * 37) % 101 for i in range(103)]
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=7, mega_batch_mult=5)
    first = list(sampler)
    assert first == list(LengthGroupedBatchSampler(lengths, 4, seed=7, mega_batch_mult=5))
    assert sorted(i for batch in first for i in batch) == list(range(103))
    assert len(first) == len(sampler) == 26
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new order each epoch …
    assert list(LengthGroupedBatchSampler(lengths, 4, seed=8, mega_batch_mult=5)) != first
    # … and batches of similar length: less spread than random batches would have.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first)
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.randperm(103, generator=generator).tolist()
    random_spread = sum(
        max(lengths[i] for i in shuffled[s : s + 4]) - min(lengths[i] for i in shuffled[s : s + 4])
        for s in range(0, 103, 4)
    )
    assert spread < random_spread / 3


def test_dataset_lengths_are_the_longest_transcript():
    dataset = RankingDataset(rankings())
    assert len(dataset) == 2 and dataset[1].strength == 4
    assert dataset.lengths[0] == max(len(t) for t in rankings()[0].texts())


def test_packed_collator_puts_each_ranking_in_one_row_with_the_same_rewards(pm_and_tokenizer):
    model, tokenizer = pm_and_tokenizer
    common = dict(eoc_token_id=model.eoc_token_id, max_length=64, margin_scale=1.0)
    rows = RankingCollator(tokenizer, **common)(rankings())
    packed = RankingCollator(tokenizer, pack=True, **common)(rankings())
    assert packed["input_ids"].shape[0] == 2  # one row per ranking, not per response
    for key in ("ranks", "group", "margin"):
        assert torch.equal(packed[key], rows[key]), key
    assert packed["reward_index"].tolist()[0][0] == 0 and packed["reward_index"].shape == (5, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model(
                **{
                    k: packed[k]
                    for k in ("input_ids", "attention_mask", "position_ids", "reward_index")
                }
            ),
            model(rows["input_ids"], rows["attention_mask"]),
            atol=1e-5,
            rtol=0,
        )
    with pytest.raises(ValueError, match="imitation"):
        RankingCollator(tokenizer, pack=True, response_mask=True, **common)
