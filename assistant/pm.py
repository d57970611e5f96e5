"""The preference model: a Hugging Face backbone plus a scalar head read at an end-of-context token.

Plain torch/transformers, no Django. A PM scores a whole transcript ("\\n\\nHuman: …\\n\\nAssistant:
…", the HH-RLHF format) by the hidden state at a dedicated `<|endofcontext|>` token appended to
every input (Askell et al. 2021). `save_pm` / `load_pm` write and rebuild a self-contained folder
(weights, backbone config, tokenizer, meta.json) without touching the network; `PMScorer` does
batched inference (collection's best-of-n scores a turn's candidates with `score_groups`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from assistant.files import staged_folder
from assistant.hardware import bf16_autocast, bf16_warning, check_bf16_request
from assistant.segment_attention import SEGMENT_ATTENTION, Segments, segments_of
from assistant.transcripts import render, reply_split

logger = logging.getLogger(__name__)

EOC_TOKEN = "<|endofcontext|>"
WEIGHTS_NAME = "model.safetensors"
META_NAME = "meta.json"
FORMAT = "alignlab-pm/1"
# CPU scoring cost grows with length; the end of a transcript is what a PM mostly needs.
DEFAULT_MAX_LENGTH = 1024


def format_for_pm(messages: Iterable, response: str) -> str:
    """Render `messages` + `response` as an HH-RLHF transcript ending in the response."""
    prefix, (rest,) = reply_split(render(messages, strip=True), [response])
    return prefix + rest


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


def group_ids(
    tokenizer,
    groups: Sequence[tuple[str, Sequence[str]]],
    *,
    eoc_token_id: int,
    max_length: int,
) -> list[tuple[list[int], list[list[int]]]]:
    """Token ids of each (prefix, responses) group: the prefix, and each response + EOC.

    A response keeps its last `max_length` ids; the prefix loses its beginning until it fits
    beside the LONGEST response, so all responses of a group are judged on the same context.
    """
    prefixes = [prefix for prefix, _ in groups]
    suffixes = [response for _, responses in groups for response in responses]
    encoded = tokenizer(prefixes + suffixes, add_special_tokens=False)["input_ids"]
    prefix_ids, suffix_ids = encoded[: len(prefixes)], iter(encoded[len(prefixes) :])
    grouped = []
    for prefix, (_, responses) in zip(prefix_ids, groups, strict=True):
        own = [(next(suffix_ids) + [eoc_token_id])[-max_length:] for _ in responses]
        window = min(len(prefix), max_length - max(len(ids) for ids in own))
        grouped.append((prefix[len(prefix) - window :], own))
    return grouped


def packed_inputs(
    tokenizer,
    groups: Sequence[tuple[str, Sequence[str]]],
    *,
    eoc_token_id: int,
    max_length: int,
) -> dict[str, torch.Tensor]:
    """Pack each (prefix, responses) group into ONE row: the shared prefix once, then every
    response followed by its EOC token, under a block attention mask.

    A response attends to itself (causally) and to the prefix, never to its siblings. Positions
    continue from the prefix for every response, so (with a causal decoder) each reward equals
    the one-row-per-response reward of `pm_inputs`, while the prefix costs one pass instead of
    k. Truncation differs only for groups over `max_length` (see `group_ids`). Returns
    `input_ids`, `attention_mask` (bool, batch x 1 x width x width, True = may attend),
    `position_ids`, and `reward_index` ((responses, 2): row and column of each EOC, in input
    order). Every response must begin where its prefix ends without a BPE merge across the
    border, as an HH transcript's " response" after "Assistant:" does.
    """
    grouped = group_ids(tokenizer, groups, eoc_token_id=eoc_token_id, max_length=max_length)
    return pack_ids(grouped, tokenizer.pad_token_id)


def flat_pack_ids(grouped: Sequence[tuple[list[int], list[list[int]]]], pad_token_id: int) -> dict:
    """`group_ids`' groups back to back in ONE row, no padding, for the segment attention
    (`assistant.segment_attention`): `input_ids` and `position_ids` (1 x tokens, positions as
    `pack_ids` gives them), `attention_mask` (1 x tokens, all real), `reward_index` (each EOC,
    at row 0) and `segments`, which place the tokens in `pack_ids`' rows for attention."""
    blocks = pack_ids(grouped, pad_token_id)
    segments = segments_of(grouped, blocks["attention_mask"])
    rows, width = blocks["input_ids"].shape
    where = segments.flat
    ends = blocks["reward_index"][:, 0] * width + blocks["reward_index"][:, 1]
    return {
        "input_ids": blocks["input_ids"].view(-1)[where][None],
        "attention_mask": torch.ones((1, where.numel()), dtype=torch.long),
        "position_ids": blocks["position_ids"].view(-1)[where][None],
        # Each EOC's padded slot, as a flat index (`flat` is sorted: a binary search).
        "reward_index": torch.stack(
            [torch.zeros_like(ends), torch.searchsorted(where, ends)], dim=1
        ),
        "segments": segments,
    }


def pack_ids(grouped: Sequence[tuple[list[int], list[list[int]]]], pad_token_id: int) -> dict:
    """`packed_inputs` from the token ids `group_ids` gives."""
    layouts = []  # per row: (ids, prefix length, [(start, length)] per response)
    for prefix, own in grouped:
        ids, spans = prefix, []
        for response_ids in own:
            spans.append((len(ids), len(response_ids)))
            ids = ids + response_ids
        layouts.append((ids, len(prefix), spans))
    width = max(len(ids) for ids, _, _ in layouts)
    input_ids = torch.full((len(layouts), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(layouts), width), dtype=torch.long)
    # Padding attends to itself only: a fully masked row would turn SDPA's output into NaN.
    mask = torch.eye(width, dtype=torch.bool).repeat(len(layouts), 1, 1)
    reward_index = []
    for row, (ids, prefix_len, spans) in enumerate(layouts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        position_ids[row, :prefix_len] = torch.arange(prefix_len)
        mask[row, :prefix_len, :prefix_len] = torch.ones(prefix_len, prefix_len).tril().bool()
        for start, length in spans:
            end = start + length
            position_ids[row, start:end] = torch.arange(prefix_len, prefix_len + length)
            mask[row, start:end, :prefix_len] = True
            mask[row, start:end, start:end] = torch.ones(length, length).tril().bool()
            reward_index.append((row, end - 1))
    return {
        "input_ids": input_ids,
        "attention_mask": mask[:, None],
        "position_ids": position_ids,
        "reward_index": torch.tensor(reward_index, dtype=torch.long),
    }


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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        reward_index: torch.Tensor | None = None,
        segments: Segments | None = None,
    ) -> torch.Tensor:
        """One reward per row, read at each row's last real (EOC) token; or, for a batch made
        by `packed_inputs` (a 4D mask) or `flat_pack_ids` (`segments`), one reward per
        `reward_index` entry."""
        packed = attention_mask.dim() == 4 or segments is not None
        if packed and (position_ids is None or reward_index is None):
            raise ValueError("a packed batch needs its position_ids and reward_index")
        kwargs = {}
        if segments is not None:
            if self.attention != SEGMENT_ATTENTION:
                raise ValueError(
                    f"a flat packed batch needs the {SEGMENT_ATTENTION!r} attention "
                    f"(the backbone has {self.attention!r})"
                )
            kwargs["segments"] = segments
            attention_mask = None  # the segments say who attends to whom
        if self._takes_position_ids:
            # Count positions over real tokens only, so left padding shifts nothing.
            kwargs["position_ids"] = (
                position_ids if packed else (attention_mask.cumsum(-1) - 1).clamp(min=0)
            )
        elif packed:
            raise ValueError(f"{type(self.backbone).__name__} cannot take packed inputs")
        if self._takes_use_cache:
            kwargs["use_cache"] = False
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = self._attention_mask(attention_mask)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state
        if packed:
            rows, last = reward_index[:, 0], reward_index[:, 1]
        else:
            # Index of the last 1 in each mask row: left or right padding, and pad == eos.
            width = attention_mask.shape[1]
            last = width - 1 - attention_mask.flip(-1).argmax(-1)
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        if not bool((input_ids[rows, last] == self.eoc_token_id).all()):
            raise ValueError("every response must end with the end-of-context token (pm_inputs)")
        picked = hidden[rows, last].to(self.head.weight.dtype)
        return self.head(picked).squeeze(-1)

    @property
    def attention(self) -> str:
        """The backbone's attention implementation ("sdpa", "eager", SEGMENT_ATTENTION, …)."""
        return getattr(self.backbone.config, "_attn_implementation", None) or "sdpa"

    @property
    def can_pack(self) -> bool:
        """Whether `packed_inputs` batches fit: a causal decoder that takes position ids."""
        return self._takes_position_ids and backbone_kind(self.backbone) == "decoder"

    def _attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
        # SDPA (the default) takes a boolean mask as it is; eager attention adds its mask.
        if self.attention != "eager":
            return mask
        floor = torch.finfo(self.backbone.dtype).min
        return torch.zeros(mask.shape, dtype=self.backbone.dtype, device=mask.device).masked_fill(
            ~mask, floor
        )


def backbone_kind(backbone: PreTrainedModel) -> str:
    """Say whether a backbone is a bidirectional encoder (BERT-like) or a causal decoder."""
    model_type = backbone.config.model_type
    return "encoder" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def save_pm(model: PreferenceModel, tokenizer, path: str | os.PathLike, meta: dict) -> Path:
    """Write a PM folder (weights, backbone config, tokenizer, meta.json) atomically; return it."""
    path = Path(path)
    with staged_folder(path) as tmp:
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
    """Batched inference with a loaded PM: score transcripts, or groups of responses that share
    a context."""

    def __init__(
        self,
        model: PreferenceModel,
        tokenizer,
        *,
        batch_size: int = 8,
        batch_tokens: int = 1024,
        bf16: bool | str = "auto",
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # rows per forward in `score`
        # Padded tokens per forward in `score_groups`. On a CPU about 1k is fastest (measured
        # by bench/evals.py: 25 s for the HHH suite vs 32 s with 8 rows a batch); a GPU wants
        # far more (backend_options={"batch_tokens": …} on the PM's model version).
        self.batch_tokens = batch_tokens
        # Autocast to bfloat16 (scores shift ~1e-2): True, False, or "auto" = where the model's
        # device computes it natively (assistant.hardware); emulated it is far slower.
        check_bf16_request(bf16)
        self.bf16 = bf16
        if warning := bf16_warning(bf16, next(model.parameters()).device):
            logger.warning("PMScorer: %s", warning)

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
        autocast = bf16_autocast(self.bf16, device)
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = _pad([rows[i] for i in chunk], self.tokenizer.pad_token_id, "right")
                rewards = self.model(**{k: v.to(device) for k, v in batch.items()})
                for i, reward in zip(chunk, rewards.float().tolist(), strict=True):
                    scores[i] = reward
        return scores

    def score_groups(self, groups: Sequence[tuple[Iterable, Sequence[str]]]) -> list[list[float]]:
        """Rewards of each group's responses as replies to its messages, in input order.

        A causal-decoder PM packs each group into one row (`packed_inputs`): the shared
        conversation is computed once, not once per response. Other PMs score one row each.
        """
        transcripts = []
        for messages, responses in groups:
            transcripts.append(reply_split(render(messages, strip=True), responses))
        if not self.model.can_pack:
            flat = iter(self.score([prefix + s for prefix, ends in transcripts for s in ends]))
            return [[next(flat) for _ in suffixes] for _, suffixes in transcripts]
        grouped = group_ids(
            self.tokenizer,
            transcripts,
            eoc_token_id=self.model.eoc_token_id,
            max_length=self.model.max_length,
        )
        scores: list[list[float]] = [[] for _ in grouped]
        device = next(self.model.parameters()).device
        autocast = bf16_autocast(self.bf16, device)
        with torch.inference_mode(), autocast:
            for chunk in self._token_batches([len(p) + sum(map(len, own)) for p, own in grouped]):
                batch = pack_ids([grouped[i] for i in chunk], self.tokenizer.pad_token_id)
                rewards = iter(
                    self.model(**{k: v.to(device) for k, v in batch.items()}).float().tolist()
                )
                for i in chunk:
                    scores[i] = [next(rewards) for _ in grouped[i][1]]
        return scores

    def _token_batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices longest first, cut into batches of at most `batch_tokens` padded tokens (a
        longer row goes alone): few rows when long, many when short, little padding."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            # Sorted longest first: a batch is as wide as its first row.
            if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= self.batch_tokens:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches
