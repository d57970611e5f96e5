"""Tiny sharpened LMs, toy conversations and configs for the context-distillation tests."""

import copy
import random

import torch

from tests.tinymodels import tiny_causal_lm, tiny_tokenizer
from tests.training.quick_config import quick_config
from training.config import DistillationConfig
from training.distill import DistillationExample

PROMPT = (
    "Below are dialogues between people and an assistant that is helpful, honest and harmless."
    "\n\nHuman: Can you help me with a poem?\n\nAssistant: Of course, I am glad to help."
)
WORDS = "the sea poem short answer help light waves think safer try capital France Paris".split()


def sharp_lm(tokenizer, seed: int = 0):
    """A tiny random LM whose matrices are scaled up: at the usual init its next-token
    distributions are so flat that no prompt moves them measurably."""
    model = tiny_causal_lm(tokenizer, seed=seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.mul_(4)
    return model


def conversations(n: int, seed: int, turns: int = 1) -> list[DistillationExample]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        messages = []
        for _ in range(turns):
            messages.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=5)) + "?"})
            reply = " ".join(rng.choices(WORDS, k=8)) + "."
            messages.append({"role": "assistant", "content": reply})
        examples.append(DistillationExample(messages))
    return examples


def config(**overrides) -> DistillationConfig:
    base = dict(warmup_steps=0, max_steps=20, max_length=64, min_conversations=1)
    return quick_config(DistillationConfig, **{**base, **overrides})


def _tokenizer(template: str | None):
    tokenizer = copy.deepcopy(tiny_tokenizer())
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer
