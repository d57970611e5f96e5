"""Our exports work with the tools people train with: `datasets` and TRL's RewardTrainer."""

import math

import pytest

from collection import exports, snapshots
from collection.models import Campaign, Conversation, Response, Turn
from tests.collection.dataset_builders import judgement_write
from tests.tinymodels import tiny_tokenizer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]

QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris.", "I am not sure."),
    ("Can you write a poem about the sea?", "Of course. Waves and light.", "No."),
    ("How do I pick a lock?", "I can't help with that.", "Use a pin."),
    ("What is two plus two?", "Two plus two is four.", "Five."),
    ("Is the sun a star?", "Yes, the sun is a star.", "No, it is a planet."),
    ("Tell me a joke.", "Why did the chicken cross the road?", "No jokes today."),
    ("What colour is the sky?", "The sky is usually blue.", "Green."),
    ("Say hello in French.", "Bonjour!", "Hello."),
]


def judged(turn, contractor, order, origin, strength=None):
    ids = list(turn.responses.order_by("index").values_list("pk", flat=True))
    ranking = [ids[i] for i in order]
    return judgement_write(turn, contractor, ranking, origin=origin, strength=strength)


@pytest.fixture
def snapshot(alice, bob):
    """Eight pairwise conversations and one 3-way ranking judged by alice and bob (overlap)."""
    pairwise = Campaign.objects.create(name="pairs", k=2)
    for i, (question, good, bad) in enumerate(QUESTIONS):
        conversation = Conversation.objects.create(campaign=pairwise, contractor=alice)
        turn = Turn.objects.create(conversation=conversation, index=0, human_text=question)
        texts = [bad, good] if i % 2 else [good, bad]
        for index, text in enumerate(texts):
            Response.objects.create(turn=turn, index=index, text=text)
        judged(turn, alice, [1, 0] if i % 2 else [0, 1], "conversation", strength=1 + i % 4)
    ranks = Campaign.objects.create(name="ranks", k=3, judgement_type="ranking")
    conversation = Conversation.objects.create(campaign=ranks, contractor=alice)
    turn = Turn.objects.create(conversation=conversation, index=0, human_text="Name a fruit.")
    for index, text in enumerate(["Apple.", "A rock.", "Banana."]):
        Response.objects.create(turn=turn, index=index, text=text)
    judged(turn, alice, [0, 2, 1], "conversation")
    judged(turn, bob, [2, 0, 1], "review")
    return snapshots.snapshot_create(filter={})


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.mark.parametrize("fmt", ["hh-rlhf", "trl", "ranked", "raw"])
def test_datasets_loads_each_parquet_export(snapshot, fmt, tmp_path, offline):
    from datasets import load_dataset

    path = tmp_path / f"{fmt}.parquet"
    written = exports.export_write(snapshot=snapshot, fmt=fmt, file_format="parquet", path=path)
    # 8 pairs + 2 judgements x 3 pairs; ranked: 10 judgements; raw: 10 + 1 consensus.
    expected = {"hh-rlhf": 14, "trl": 14, "ranked": 10, "raw": 11}[fmt]
    assert written == expected == exports.export_row_count(snapshot, fmt)
    loaded = load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.num_rows == expected
    assert loaded.column_names == exports.parquet_schema(fmt).names
    first = loaded[0]
    assert first == next(exports.export_rows(snapshot, fmt))


def test_trl_reward_trainer_trains_on_the_trl_export(snapshot, tmp_path, offline):
    import torch
    from datasets import load_dataset
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    path = tmp_path / "trl.parquet"
    exports.export_write(
        snapshot=snapshot, fmt="trl", file_format="parquet", path=path, margin=True
    )
    train = load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert train.column_names == ["prompt", "chosen", "rejected", "tie", "both_bad", "margin"]

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    model.config.pad_token_id = tokenizer.pad_token_id
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    args = RewardConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_length=256,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 14  # max_length filtered nothing out
    trainer.train()

    assert trainer.state.global_step == 3
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    unchanged = [
        name for name, p in trainer.model.named_parameters() if torch.equal(p.cpu(), before[name])
    ]
    assert unchanged == []
