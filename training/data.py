"""Rankings → token ids: the `Ranking` record, a dataset, a length-grouped sampler, a collator.

Plain Python + torch, no Django. A batch holds ALL responses of its rankings in one padded
tensor, so one forward scores every response and the loss compares them by `group`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field

import torch
from torch.utils.data import Dataset

from assistant.pm import flat_pack_ids, group_ids, packed_inputs, pm_inputs
from assistant.transcripts import render, reply_split

STRENGTHS = (1, 2, 3, 4)  # collection's pairwise strength: 1 slightly … 4 much better


@dataclass
class Ranking:
    """k responses to one context, `ranks[i]` = place of `responses[i]` (0 best, ties allowed).

    The context is either chat messages (`{"role", "content"}` dicts) or `context_text`, a
    transcript already rendered as `format_for_pm` renders one ("\\n\\nHuman: …").
    """

    responses: list[str]
    ranks: list[int]
    context: list[dict] = field(default_factory=list)
    context_text: str | None = None
    strength: int | None = None  # pairwise only: 1 slightly … 4 much better
    weight: float = 1.0  # the loss weight (a contractor's reliability), with config.weighted
    source: str = ""  # where it came from ("stackexchange:beer/Posts.xml#Id=2"), for errors

    def __post_init__(self):
        if len(self.responses) != len(self.ranks):
            raise ValueError(f"{len(self.responses)} responses but {len(self.ranks)} ranks")
        if len(self.responses) < 2:
            raise ValueError("a ranking needs at least two responses")
        if self.strength is not None and self.strength not in STRENGTHS:
            raise ValueError(f"strength must be 1..4, not {self.strength!r}")

    def split(self) -> tuple[str, list[str]]:
        """(the transcript up to the "Assistant:" tag, each response's rest " …"): prefix + rest
        is that response's transcript (`assistant.transcripts.reply_split`)."""
        context = self.context_text
        if context is None:
            context = render(self.context, strip=True)
        return reply_split(context, self.responses)

    def prefix(self) -> str:
        """The transcript before the response: the context and the "Assistant:" tag."""
        return self.split()[0]

    def texts(self) -> list[str]:
        """One transcript per response, each ending in that response."""
        prefix, rests = self.split()
        return [prefix + rest for rest in rests]


def rankings_hash(rankings: Sequence[Ranking]) -> str:
    """A content hash of the training data, stored in checkpoints so a resume cannot mix data."""
    digest = hashlib.sha256()
    for ranking in rankings:
        digest.update(json.dumps(asdict(ranking), sort_keys=True).encode())
    return digest.hexdigest()


def nested_subset(rankings: Sequence[Ranking], n: int | None, seed: int) -> list[Ranking]:
    """The first `n` rankings of one permutation seeded by `seed`, in their original order
    (None: all). Nested: for one seed, the subset of n is inside the subset of any m > n."""
    if n is None:
        return list(rankings)
    if n > len(rankings):
        raise ValueError(
            f"train_comparisons={n} but the training data has only {len(rankings)} rankings"
        )
    order = random.Random(seed).sample(range(len(rankings)), len(rankings))
    return [rankings[i] for i in sorted(order[:n])]


class RankingDataset(Dataset):
    """Rankings by index; `lengths` (characters of the longest transcript) drive length grouping."""

    def __init__(self, rankings: Sequence[Ranking]):
        self.rankings = list(rankings)
        # Characters, not tokens: close enough to group by, and free.
        self.lengths = [max(len(t) for t in r.texts()) for r in self.rankings]

    def __len__(self) -> int:
        return len(self.rankings)

    def __getitem__(self, index: int) -> Ranking:
        return self.rankings[index]


class LengthGroupedBatchSampler:
    """Batches of indices of similar length, reshuffled per epoch from (seed, epoch).

    Shuffle all indices, cut them into mega-batches of `mega_batch_mult * batch_size`, sort
    each by length (longest first), cut into batches, then shuffle the batch order: little
    padding, yet no fixed order. Every index appears exactly once per epoch.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, mega_batch_mult: int = 50
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of `epoch` (default: the one set with `set_epoch`)."""
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        window = self.mega_batch_mult * self.batch_size
        batches = []
        for start in range(0, len(order), window):
            mega = sorted(order[start : start + window], key=lambda i: -self.lengths[i])
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


@dataclass(eq=False)
class RankingCollator:
    """Rankings → one padded batch of all their responses, plus ranks, group and margin.

    Uses `assistant.pm.pm_inputs`, which truncates from the LEFT, so the end of each (differing)
    response and the EOC token always survive; pads only to the longest row of the batch.
    With `response_mask=True` it also marks each row's response tokens (the imitation baseline
    trains on them; pass the EOS id as `eoc_token_id` there so the LM learns to stop).
    With `pack=True` (causal decoder PMs) each ranking is one row instead: its context once,
    then every response, under a block mask (`assistant.pm.packed_inputs`), so the shared
    context is computed once per ranking rather than once per response. With `flat=True` as
    well, the packed rankings sit back to back in ONE row with no padding, for a backbone under
    the segment attention (`assistant.pm.flat_pack_ids`).
    """

    tokenizer: object
    _: KW_ONLY
    eoc_token_id: int
    max_length: int
    margin_scale: float | None = None
    response_mask: bool = False
    padding_side: str = "right"
    pack: bool = False
    flat: bool = False
    weighted: bool = False

    def __post_init__(self):
        if self.pack and self.response_mask:
            raise ValueError("packed batches are for PM losses; imitation needs one row each")
        if self.flat and not self.pack:
            raise ValueError("flat=True lays packed rankings in one row: it needs pack=True")

    def __call__(self, rankings: Sequence[Ranking]) -> dict[str, torch.Tensor]:
        texts, ranks, group = [], [], []
        for g, ranking in enumerate(rankings):
            texts += ranking.texts()
            ranks += ranking.ranks
            group += [g] * len(ranking.responses)
        if self.flat:
            batch = flat_pack_ids(
                group_ids(
                    self.tokenizer,
                    [ranking.split() for ranking in rankings],
                    eoc_token_id=self.eoc_token_id,
                    max_length=self.max_length,
                ),
                self.tokenizer.pad_token_id,
            )
        elif self.pack:
            batch = packed_inputs(
                self.tokenizer,
                [ranking.split() for ranking in rankings],
                eoc_token_id=self.eoc_token_id,
                max_length=self.max_length,
            )
        else:
            batch = pm_inputs(
                self.tokenizer,
                texts,
                eoc_token_id=self.eoc_token_id,
                max_length=self.max_length,
                padding_side=self.padding_side,
            )
        batch["ranks"] = torch.tensor(ranks, dtype=torch.long)
        batch["group"] = torch.tensor(group, dtype=torch.long)
        batch["margin"] = torch.tensor([self._margin(r) for r in rankings], dtype=torch.float)
        if self.weighted:
            batch["weight"] = torch.tensor([r.weight for r in rankings], dtype=torch.float)
        if self.response_mask:
            batch["response_mask"] = self._response_mask(rankings, batch["attention_mask"])
        return batch

    def _margin(self, ranking: Ranking) -> float:
        if self.margin_scale is None or ranking.strength is None:
            return 0.0
        return self.margin_scale * (ranking.strength - 1) / (len(STRENGTHS) - 1)

    def _response_mask(self, rankings, attention_mask) -> torch.Tensor:
        # Tokens after the "…Assistant:" prefix are the response's: the prefix ends in ":" and
        # the response starts with a space, so BPE never merges across that boundary.
        counts = []
        for ranking in rankings:
            prefix = self.tokenizer(ranking.prefix(), add_special_tokens=False)["input_ids"]
            prefix_len = len(prefix)
            full = self.tokenizer(ranking.texts(), add_special_tokens=False)["input_ids"]
            counts += [len(ids) + 1 - prefix_len for ids in full]  # +1: the appended EOC/EOS
        mask = torch.zeros_like(attention_mask, dtype=torch.bool)
        for row, count in enumerate(counts):
            real = attention_mask[row].nonzero().squeeze(-1)
            mask[row, real[-min(count, len(real)) :]] = True
        return mask
