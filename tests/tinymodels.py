"""Tiny random transformers and a tokenizer trained in-process, for tests that need a real model.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a few hundred sentences,
and the models are random Llama (decoder) / BERT (encoder) configs small enough to run in
milliseconds. `save_tiny_lm(path)` writes a normal Hugging Face folder, so the code under test
loads it exactly as it loads a real model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tests.data import HHH_DIR

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def training_sentences() -> list[str]:
    """English text to train the throwaway tokenizer on: a few lines and the HHH eval items,
    which ship in the repository, so the tokenizer is the same on every machine."""
    sentences = [
        "Human: What is the capital of France?",
        "Assistant: The capital of France is Paris.",
        "Human: Can you help me write a poem about the sea?",
        "Assistant: Of course. Here is a short poem about waves and light.",
        "I'm not sure, but I think the answer is forty-two.",
        "I can't help with that, but here is something safer you could try.",
    ]
    for category in ("helpful", "honest", "harmless", "other"):
        for example in json.loads((HHH_DIR / category / "task.json").read_text())["examples"]:
            sentences.append(example["input"])
            sentences.extend(example["target_scores"])
    return sentences


@lru_cache(maxsize=1)
def tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with a chat template and a pad token distinct from EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(training_sentences(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|pad|>",
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tiny(
    config_class, model_class, tokenizer, *, seed: int, hidden_size: int, layers: int, **extra
):
    """A random `model_class` of a few K parameters over `tokenizer`'s vocabulary."""
    import torch

    tokenizer = tokenizer or tiny_tokenizer()
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    return model_class(config).eval()


def tiny_causal_lm(tokenizer=None, *, seed: int = 0, hidden_size: int = 32, layers: int = 2):
    """A random Llama-architecture causal LM (the default model's family), a few K parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or tiny_tokenizer()
    return _tiny(
        LlamaConfig,
        LlamaForCausalLM,
        tokenizer,
        seed=seed,
        hidden_size=hidden_size,
        layers=layers,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )


def tiny_encoder(tokenizer=None, *, seed: int = 0, hidden_size: int = 32, layers: int = 2):
    """A random BERT-architecture encoder (the MiniLM family), for encoder preference models."""
    from transformers import BertConfig, BertModel

    return _tiny(
        BertConfig, BertModel, tokenizer, seed=seed, hidden_size=hidden_size, layers=layers
    )


def save_tiny_lm(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny causal LM + tokenizer as a Hugging Face folder and return its path."""
    tokenizer = tiny_tokenizer()
    tiny_causal_lm(tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
