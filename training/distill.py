"""Context distillation (Askell et al. 2021, §3): finetune the LM to act as if prompted.

The teacher is the base LM reading the prompt (the HHH prompt) before each conversation: frozen,
run in inference mode, the prompt's keys and values computed once and reused for every row.
The student is the same base LM reading the conversation alone; it is trained to minimise
KL(teacher || student) between the two next-token distributions at every position of the
conversation, so that afterwards it needs no prompt, and no prompt's cost per call.

Plain torch + transformers, no Django. One process (no DDP); the steps, optimizer, schedule,
attention switch and resumable checkpoints are training/runner.py's, the KL its objective.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache

from assistant.backends.base import Context, Message
from assistant.hardware import bf16_autocast, resolve_bf16
from assistant.prompting import RenderMode, split_prefix
from training.config import DistillationConfig
from training.data import LengthGroupedBatchSampler
from training.runner import Objective, RunOptions, TrainResult, device_of, placement, run_steps

logger = logging.getLogger(__name__)


@dataclass
class DistillationExample:
    """One conversation: user and assistant messages, ending with the assistant's response."""

    messages: list[dict]  # {"role": "user" | "assistant", "content": …}
    source: str = ""  # where it came from ("snapshot 3 turn 41"), for errors

    def __post_init__(self):
        roles = [message["role"] for message in self.messages]
        if len(roles) < 2 or roles[0] != "user" or roles[-1] != "assistant":
            raise ValueError(
                f"{self.source or 'a conversation'}: needs a user message first and the "
                f"assistant's response last, not {roles}"
            )


def distillation_kl(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Mean over positions of KL(teacher || student) = sum_v p_t(v) (log p_t(v) - log p_s(v)).

    Both are (positions, vocabulary) logits of the same next tokens; computed in float32.
    """
    teacher = F.log_softmax(teacher_logits.float(), dim=-1)
    student = F.log_softmax(student_logits.float(), dim=-1)
    if teacher.shape[0] == 0:
        return student.sum() * 0.0  # no position to compare: keeps the graph for backward()
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


# --- tokens: the same conversation as the teacher and the student read it -------------------------


@dataclass
class AlignedRows:
    """One conversation tokenized twice; the last `targets` tokens of both rows are the same.

    The teacher's row follows the cached prompt (it starts with the prompt's last token); the
    student's is the conversation alone, rendered as the LM is served without a prompt. Each
    model's predictions of those `targets` tokens are what the KL compares.
    """

    teacher_ids: list[int]
    student_ids: list[int]
    targets: int


class ConversationTokens:
    """Render and tokenize conversations for teacher and student, as the LM backend does.

    The prompt prefix is tokenized on its own and the conversation after it, as
    `assistant.backends.hf` does (so the teacher sees exactly what the served LM sees), and the
    response follows the "Assistant:" tag as `TransformersBackend.logprob` scores one.
    """

    def __init__(self, tokenizer, *, prompt: str, mode: RenderMode, max_length: int):
        if not prompt.strip():
            raise ValueError("context distillation needs a prompt to distil")
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.mode = mode
        self.max_length = max_length
        probe = Context(messages=(Message("user", "?"),), prompt=prompt)
        self.prefix = split_prefix(probe, mode=mode, tokenizer=tokenizer).prefix
        self.prefix_ids = self._encode_prefix(self.prefix)
        if not self.prefix or not self.prefix_ids:
            raise ValueError(
                f"the prompt does not render as a fixed prefix in {mode} mode (a chat template "
                "that writes the system message differently once turns follow it)"
            )

    def __call__(self, example: DistillationExample) -> AlignedRows:
        *earlier, response = example.messages
        context = Context(
            messages=tuple(Message(m["role"], m["content"]) for m in earlier), prompt=self.prompt
        )
        prompted = split_prefix(context, mode=self.mode, tokenizer=self.tokenizer)
        if prompted.prefix != self.prefix:
            raise ValueError(
                f"{example.source or 'a conversation'}: the prompt renders differently before it"
            )
        bare = split_prefix(
            replace(context, prompt=None, prompt_key=None), mode=self.mode, tokenizer=self.tokenizer
        )
        reply = self._encode(self._reply_text(response["content"]))
        teacher = self._encode(prompted.suffix) + reply
        student = self._encode_prefix(bare.prefix) + self._encode(bare.suffix) + reply
        # The conversation is the tokens both rows end with, never reaching into the prompt.
        # Whatever precedes it is one row's own: the "\n\n" before the first "Human:" that only
        # follows a prompt, a chat template's default system message, a BOS token.
        shared = 0
        limit = min(len(teacher), len(student))
        while shared < limit and teacher[-1 - shared] == student[-1 - shared]:
            shared += 1
        kept = min(shared, self.max_length)  # a long conversation loses its beginning
        teacher_own, student_own = (
            teacher[: len(teacher) - shared],
            student[: len(student) - shared],
        )
        conversation = teacher[len(teacher) - kept :]
        return AlignedRows(
            # The prompt's last token is not cached: the row's first logits predict what follows.
            teacher_ids=self.prefix_ids[-1:] + teacher_own + conversation,
            student_ids=student_own + conversation,
            # With nothing before the conversation, the student cannot predict its first token.
            targets=kept if student_own else max(0, kept - 1),
        )

    def _reply_text(self, content: str) -> str:
        return " " + content.strip() if self.mode == "completion" else content.strip()

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def _encode_prefix(self, text: str) -> list[int]:
        # As the backend does: a raw transcript starts like a document (BOS where the tokenizer
        # adds one); a chat template writes its own special tokens into the text.
        return self.tokenizer(text, add_special_tokens=self.mode == "completion").input_ids


def collate_rows(rows: Sequence[AlignedRows], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad both sides; `*_compare` marks the positions whose predictions the KL compares.

    Row-major order of the marked positions is the same on both sides, so `logits[compare]`
    of teacher and student line up token for token.
    """
    batch = {}
    for side in ("teacher", "student"):
        sequences = [getattr(row, f"{side}_ids") for row in rows]
        width = max(len(ids) for ids in sequences)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        compare = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (sequence, row) in enumerate(zip(sequences, rows, strict=True)):
            ids[i, : len(sequence)] = torch.tensor(sequence)
            mask[i, : len(sequence)] = 1
            # Position p predicts token p + 1: the `targets` positions before the last one.
            compare[i, len(sequence) - 1 - row.targets : len(sequence) - 1] = True
        batch[f"{side}_ids"], batch[f"{side}_mask"], batch[f"{side}_compare"] = ids, mask, compare
    return batch


# --- the two models -------------------------------------------------------------------------------


class PromptedTeacher:
    """The frozen base LM with the prompt before every row; the prompt is run through it once."""

    def __init__(self, model, prefix_ids: Sequence[int]):
        self.model = model.eval().requires_grad_(False)
        self.cached = len(prefix_ids) - 1  # all but the last token, which starts every row
        self.cache = None
        if self.cached:
            self.cache = DynamicCache(config=model.config)
            ids = torch.tensor([list(prefix_ids[:-1])], device=device_of(model))
            with torch.inference_mode():
                model(input_ids=ids, cache=self.cache, use_cache=True, logits_to_keep=1)

    def logits(self, input_ids: Tensor, attention_mask: Tensor, compare: Tensor) -> Tensor:
        """The teacher's logits at the `compare` positions, (positions, vocabulary)."""
        with torch.inference_mode():
            kwargs = {"use_cache": False}
            if self.cache is not None:
                rows = input_ids.shape[0]
                cache = copy.deepcopy(self.cache)  # a forward appends to it: never the original
                cache.batch_repeat_interleave(rows)
                prompt = attention_mask.new_ones((rows, self.cached))
                attention_mask = torch.cat([prompt, attention_mask], dim=1)
                kwargs = {"cache": cache, "use_cache": True}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            picked = out.logits[compare]
        # A plain tensor again, outside inference mode: autograd may save it for the student.
        return picked.clone()


def _student_logits(student, batch: dict[str, Tensor]) -> Tensor:
    out = student(
        input_ids=batch["student_ids"], attention_mask=batch["student_mask"], use_cache=False
    )
    return out.logits[batch["student_compare"]]


def _batch_kl(student, teacher: PromptedTeacher, batch: dict[str, Tensor], autocast) -> Tensor:
    with autocast:
        target = teacher.logits(
            batch["teacher_ids"], batch["teacher_mask"], batch["teacher_compare"]
        )
        logits = _student_logits(student, batch)
    return distillation_kl(target, logits)


# --- measuring and training -------------------------------------------------------------------


def measure_kl(
    student,
    teacher_model,
    tokenizer,
    examples: Sequence[DistillationExample],
    *,
    prompt: str,
    mode: RenderMode,
    max_length: int = 512,
    batch_size: int = 8,
) -> float:
    """Mean KL(prompted teacher || unprompted student) per conversation token of `examples`."""
    rendering = ConversationTokens(tokenizer, prompt=prompt, mode=mode, max_length=max_length)
    teacher = PromptedTeacher(teacher_model, rendering.prefix_ids)
    return _mean_kl(
        student, teacher, [rendering(e) for e in examples], batch_size, _pad_id(tokenizer)
    )


@torch.no_grad()
def _mean_kl(
    student, teacher: PromptedTeacher, rows: Sequence[AlignedRows], batch_size, pad_id, bf16=False
) -> float:
    """Token-weighted mean KL over `rows`, longest first, in fixed batches."""
    device = device_of(student)
    was_training = student.training
    student.eval()
    autocast = bf16_autocast(bf16, device)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].student_ids))
    total, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate_rows(chunk, pad_id).items()}
        count = int(batch["student_compare"].sum())
        total += _batch_kl(student, teacher, batch, autocast).item() * count
        tokens += count
    student.train(was_training)
    return total / tokens if tokens else 0.0


def examples_hash(examples: Sequence[DistillationExample], *, prompt: str, mode: str) -> str:
    """A content hash of what the student learns from, stored in checkpoints (no mixed resume)."""
    digest = hashlib.sha256(json.dumps({"prompt": prompt, "mode": mode}).encode())
    for example in examples:
        digest.update(json.dumps(asdict(example), sort_keys=True).encode())
    return digest.hexdigest()


class DistillationObjective(Objective):
    """KL(prompted teacher || student) on aligned rows; the held-out KL before and during."""

    label = "distillation"
    noun = "conversations"
    loss_name = "kl"
    eval_key = "eval_kl"
    baseline_key = "eval_kl_before"  # the untrained student's distance, for comparison
    logger = logger

    def __init__(self, student, teacher: PromptedTeacher, rows, held_out, config, pad_id: int):
        self.student, self.teacher, self.rows, self.held_out_rows = student, teacher, rows, held_out
        self.held_out, self.config, self.pad_id = bool(held_out), config, pad_id
        self.bf16 = resolve_bf16(config.bf16, device_of(teacher.model))

    def collate(self, indices):
        return collate_rows([self.rows[i] for i in indices], self.pad_id)

    def loss(self, model, batch, autocast):
        return _batch_kl(model, self.teacher, batch, autocast), None

    def evaluate(self):
        return {"eval_kl": self.baseline()}

    def baseline(self):
        return _mean_kl(
            self.student,
            self.teacher,
            self.held_out_rows,
            self.config.batch_size,
            self.pad_id,
            self.bf16,
        )


def train_distillation(
    student,
    teacher_model,
    tokenizer,
    train: Sequence[DistillationExample],
    config: DistillationConfig,
    *,
    prompt: str,
    mode: RenderMode,
    eval_set: Sequence[DistillationExample] | None = None,
    device: str | torch.device | None = None,
    **run: Unpack[RunOptions],
) -> TrainResult:
    """Train `student` (a causal LM) in place towards `teacher_model` reading `prompt` first.

    Both start as the same base LM; the teacher is frozen. `run` (on_step, should_stop,
    checkpoint_dir, resume: training.runner.RunOptions) goes on to the runner; called again
    with the same `checkpoint_dir`, it resumes from the newest checkpoint there.
    """
    where = placement(device)
    torch.manual_seed(config.seed)
    rendering = ConversationTokens(
        tokenizer, prompt=prompt, mode=mode, max_length=config.max_length
    )
    rows = [rendering(example) for example in train]
    held_out = [rendering(example) for example in eval_set or []]
    _check_window(teacher_model, len(rendering.prefix_ids) - 1, rows + held_out, config)
    teacher = PromptedTeacher(teacher_model.to(where.device), rendering.prefix_ids)
    objective = DistillationObjective(student, teacher, rows, held_out, config, _pad_id(tokenizer))
    # Batches of conversations of similar length.
    sampler = LengthGroupedBatchSampler(
        [len(row.student_ids) for row in rows], config.batch_size, seed=config.seed
    )
    result = run_steps(
        student,
        objective,
        config,
        sampler,
        where=where,
        data_hash=examples_hash(train, prompt=prompt, mode=mode),
        **run,
    )
    student.eval()
    return result


def _check_window(model, cached: int, rows: Sequence[AlignedRows], config) -> None:
    """Refuse a prompt + conversation longer than the positions the model was trained on."""
    window = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    longest = cached + max((len(row.teacher_ids) for row in rows), default=0)
    if window and longest > window:
        raise ValueError(
            f"the prompt ({cached + 1} tokens) and the longest conversation need {longest} "
            f"positions; the model has {window}: lower max_length (now {config.max_length})"
        )


def _pad_id(tokenizer) -> int:
    # Rows are read through their attention mask: any id pads, EOS where there is no pad token.
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
