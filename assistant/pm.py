"""The preference model: a Hugging Face backbone plus a scalar head read at an end-of-context token.

Plain torch/transformers, no Django. A PM scores a whole transcript ("\\n\\nHuman: …\\n\\nAssistant:
…", the HH-RLHF format) by the hidden state at a dedicated `<|endofcontext|>` token appended to
every input (Askell et al. 2021). `save_pm` / `load_pm` write and rebuild a self-contained folder
(weights, backbone config, tokenizer, meta.json) without touching the network; `PMScorer` does
batched inference and best-of-n reranking.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from assistant.backends.base import Sample

EOC_TOKEN = "<|endofcontext|>"
WEIGHTS_NAME = "model.safetensors"
META_NAME = "meta.json"
FORMAT = "alignlab-pm/1"
# CPU scoring cost grows with length; the end of a transcript is what a PM mostly needs.
DEFAULT_MAX_LENGTH = 1024


def format_for_pm(messages: Iterable, response: str) -> str:
    """Render `messages` + `response` as an HH-RLHF transcript ending in the response."""
    roles = {"user": "Human", "human": "Human", "assistant": "Assistant"}
    parts = []
    for message in messages:
        # Backends trade in `Message` objects; exports and APIs in plain dicts.
        role, content = (
            (message["role"], message["content"])
            if isinstance(message, dict)
            else (message.role, message.content)
        )
        if role not in roles:
            raise ValueError(f"a PM transcript has no place for role {role!r}")
        # Strip so a sampler's leading space or trailing newline does not move the score.
        parts.append(f"\n\n{roles[role]}: {content.strip()}")
    parts.append(f"\n\nAssistant: {response.strip()}")
    return "".join(parts)


def add_eoc_token(tokenizer, eoc_token: str = EOC_TOKEN) -> int:
    """Make sure `tokenizer` has the EOC special token and a pad token; return the EOC id."""
    if eoc_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [eoc_token]})
    if tokenizer.pad_token is None:
        # Llama-style tokenizers have no pad token; rows are located by the attention mask,
        # so padding with EOS is harmless.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(eoc_token)


def pm_inputs(
    tokenizer,
    texts: Sequence[str],
    *,
    eoc_token_id: int,
    max_length: int,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Tokenize `texts`, append the EOC token, keep the last `max_length` ids, and pad."""
    rows = _eoc_rows(tokenizer, texts, eoc_token_id, max_length)
    return _pad(rows, tokenizer.pad_token_id, padding_side)


def _eoc_rows(tokenizer, texts, eoc_token_id: int, max_length: int) -> list[list[int]]:
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    # Truncate from the left: the last, differing response and the EOC token must survive.
    return [(ids + [eoc_token_id])[-max_length:] for ids in encoded]


def _pad(rows: list[list[int]], pad_token_id: int, padding_side: str) -> dict[str, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
        input_ids[i, span] = torch.tensor(row)
        attention_mask[i, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class PreferenceModel(nn.Module):
    """A backbone (decoder or encoder, no LM head) + Linear(hidden, 1) read at the EOC token."""

    def __init__(self, backbone: PreTrainedModel, *, eoc_token_id: int, max_length: int):
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            # BERT's pooler reads [CLS], not EOC: unused weights get no gradient, which DDP rejects.
            backbone.pooler = None
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1).to(backbone.dtype)
        self.eoc_token_id = eoc_token_id
        self.max_length = max_length
        params = inspect.signature(backbone.forward).parameters
        self._takes_position_ids = "position_ids" in params
        self._takes_use_cache = "use_cache" in params

    @classmethod
    def from_backbone(
        cls,
        path_or_model: str | os.PathLike | PreTrainedModel,
        tokenizer=None,
        *,
        eoc_token: str = EOC_TOKEN,
        max_length: int | None = None,
        dtype: torch.dtype | None = None,
        **from_pretrained: object,
    ) -> PreferenceModel:
        """Build a new PM (random head); adds EOC to `tokenizer`, resizes the backbone in place."""
        if isinstance(path_or_model, PreTrainedModel):
            # A *ForCausalLM's base_model is the bare transformer; a bare model returns itself.
            backbone = path_or_model.base_model
        else:
            # `from_pretrained` carries extras such as gguf_file= (the default model ships as GGUF).
            backbone = AutoModel.from_pretrained(
                path_or_model, dtype=dtype, local_files_only=True, **from_pretrained
            )
        if tokenizer is None:
            if isinstance(path_or_model, PreTrainedModel):
                raise ValueError("pass the tokenizer that goes with a backbone model")
            tokenizer = AutoTokenizer.from_pretrained(
                path_or_model, local_files_only=True, **from_pretrained
            )
        eoc_token_id = add_eoc_token(tokenizer, eoc_token)
        if backbone.get_input_embeddings().num_embeddings < len(tokenizer):
            backbone.resize_token_embeddings(len(tokenizer))
        if max_length is None:
            limit = getattr(backbone.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
            max_length = min(limit, DEFAULT_MAX_LENGTH)
        if dtype is not None:
            backbone = backbone.to(dtype)
        return cls(backbone, eoc_token_id=eoc_token_id, max_length=max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards of shape (batch,), one per row, read at each row's last real (EOC) token."""
        kwargs = {}
        if self._takes_position_ids:
            # Count positions over real tokens only, so left padding shifts nothing.
            kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        if self._takes_use_cache:
            kwargs["use_cache"] = False
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state
        # Index of the last 1 in each mask row: works for left and right padding, and pad == eos.
        width = attention_mask.shape[1]
        last = width - 1 - attention_mask.flip(-1).argmax(-1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        if not bool((input_ids[rows, last] == self.eoc_token_id).all()):
            raise ValueError("every row must end with the end-of-context token (see pm_inputs)")
        picked = hidden[rows, last].to(self.head.weight.dtype)
        return self.head(picked).squeeze(-1)


def backbone_kind(backbone: PreTrainedModel) -> str:
    """Say whether a backbone is a bidirectional encoder (BERT-like) or a causal decoder."""
    model_type = backbone.config.model_type
    return "encoder" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def save_pm(model: PreferenceModel, tokenizer, path: str | os.PathLike, meta: dict) -> Path:
    """Write a PM folder (weights, backbone config, tokenizer, meta.json) atomically; return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so the final rename never crosses a filesystem.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.backbone.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / WEIGHTS_NAME))
        # The caller's keys (run id, snapshot hash, metrics, config) first; what loading needs wins.
        full_meta = {
            **meta,
            "format": FORMAT,
            "backbone": {
                "kind": backbone_kind(model.backbone),
                "arch": type(model.backbone).__name__,
                "model_type": model.backbone.config.model_type,
                "hidden_size": model.backbone.config.hidden_size,
            },
            "eoc_token": tokenizer.convert_ids_to_tokens(model.eoc_token_id),
            "eoc_token_id": model.eoc_token_id,
            "max_length": model.max_length,
            "dtype": str(model.head.weight.dtype).removeprefix("torch."),
            "tokenizer": {
                "class": type(tokenizer).__name__,
                "size": len(tokenizer),
                "pad_token": tokenizer.pad_token,
                "eos_token": tokenizer.eos_token,
            },
        }
        (tmp / META_NAME).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        if path.exists():
            # Move the old folder aside first: a directory cannot be replaced in one rename.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_pm(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreferenceModel, object, dict]:
    """Rebuild a PM saved by `save_pm` offline, in eval mode (dtype None = the saved dtype)."""
    path = Path(path)
    meta = json.loads((path / META_NAME).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an AlignLab preference model ({meta.get('format')!r})")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    backbone = AutoModel.from_config(config)
    model = PreferenceModel(
        backbone,
        eoc_token_id=tokenizer.convert_tokens_to_ids(meta["eoc_token"]),
        max_length=meta["max_length"],
    )
    assert model.eoc_token_id == meta["eoc_token_id"], "tokenizer and meta disagree on EOC"
    load_model(model, str(path / WEIGHTS_NAME), strict=True)
    model.to(device=device, dtype=dtype or getattr(torch, meta["dtype"]))
    return model.eval(), tokenizer, meta


class PMScorer:
    """Batched inference with a loaded PM: score transcripts, rerank sampled responses."""

    def __init__(self, model: PreferenceModel, tokenizer, *, batch_size: int = 8, bf16=False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.bf16 = bf16  # autocast to bfloat16: faster on recent CPUs, scores shift ~1e-2

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, device=None, dtype=None, **kwargs) -> PMScorer:
        """Load the PM at `path` and wrap it."""
        model, tokenizer, _ = load_pm(path, device=device, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    def score(self, texts: Sequence[str], batch_size: int | None = None) -> list[float]:
        """One reward per text, in input order."""
        if not texts:
            return []
        batch_size = batch_size or self.batch_size
        device = next(self.model.parameters()).device
        rows = _eoc_rows(self.tokenizer, texts, self.model.eoc_token_id, self.model.max_length)
        # Longest first, so similar lengths share a batch (little padding) and OOM shows early.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        scores: list[float] = [0.0] * len(rows)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = _pad([rows[i] for i in chunk], self.tokenizer.pad_token_id, "right")
                rewards = self.model(**{k: v.to(device) for k, v in batch.items()})
                for i, reward in zip(chunk, rewards.float().tolist(), strict=True):
                    scores[i] = reward
        return scores

    def rerank(self, samples: Sequence[Sample], messages: Iterable) -> list[tuple[Sample, float]]:
        """Score each sample as the reply to `messages`; return (sample, score) best first."""
        messages = list(messages)
        scores = self.score([format_for_pm(messages, sample.text) for sample in samples])
        # sorted() is stable: ties keep the sampler's order.
        return sorted(zip(samples, scores, strict=True), key=lambda pair: -pair[1])
