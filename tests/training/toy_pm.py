"""Tiny random PMs and toy rankings for the training-loop tests: the better response has more
marker words, so a PM that learns anything learns the marker."""

import copy
import random

import torch

from assistant.pm import PreferenceModel
from tests.tinymodels import tiny_causal_lm, tiny_encoder, tiny_tokenizer
from tests.training.quick_config import quick_config
from training.config import PreferenceTrainingConfig
from training.data import Ranking

FILLER = ["think", "sea", "here", "light", "waves", "poem", "short", "answer", "safer", "try"]
MARKER = "help"  # one token in the tiny tokenizer


def tiny_pm(kind: str = "decoder", seed: int = 0, max_length: int = 48):
    """A fresh tiny PM and its own tokenizer (from_backbone adds the EOC token to it)."""
    tokenizer = copy.deepcopy(tiny_tokenizer())
    backbone = (tiny_causal_lm if kind == "decoder" else tiny_encoder)(tokenizer, seed=seed)
    torch.manual_seed(seed)  # the head, and the new EOC embedding row
    model = PreferenceModel.from_backbone(backbone, tokenizer, max_length=max_length)
    return model, tokenizer


def toy_rankings(n: int, seed: int) -> list[Ranking]:
    """Pairs and triples where the better response has more marker words (same word count)."""
    rng = random.Random(seed)
    rankings = []
    for _ in range(n):
        k = rng.choice([2, 2, 3])
        responses = []
        for markers in range(k - 1, -1, -1):  # best first: k-1 markers … none
            words = rng.choices(FILLER, k=4 + (k - 1 - markers)) + [MARKER] * markers
            rng.shuffle(words)
            responses.append(" ".join(words))
        order = list(range(k))
        rng.shuffle(order)  # the best is not always first
        question = " ".join(rng.choices(FILLER, k=3)) + "?"
        rankings.append(
            Ranking(
                [responses[i] for i in order],
                order,
                context=[{"role": "user", "content": question}],
            )
        )
    return rankings


def config(**overrides) -> PreferenceTrainingConfig:
    base = dict(warmup_steps=2, max_steps=6, seed=0, max_length=48, weight_decay=0.0)
    return quick_config(PreferenceTrainingConfig, **{**base, **overrides})


def toy_train(model, tokenizer, n: int, *, eval_n: int = 8, **overrides):
    """`train_preference_model` on `n` toy rankings (seed 1) under `config(**overrides)`,
    evaluated on `eval_n` others (seed 2)."""
    from training.loop import train_preference_model

    train, held_out = toy_rankings(n, 1), toy_rankings(eval_n, 2)
    return train_preference_model(model, tokenizer, train, config(**overrides), eval_set=held_out)
