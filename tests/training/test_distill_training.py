"""Context distillation training: the KL falls and the bare student nears the prompted teacher,
bf16 autocast and accumulation, cancel and resume."""

import copy
import math

import pytest
import torch

from tests.training.distill_builders import (
    PROMPT,
    _tokenizer,
    config,
    conversations,
    sharp_lm,
)
from training.config import DistillationConfig
from training.distill import (
    measure_kl,
    train_distillation,
)

# The machine is shared: each test keeps to one core (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# --- training ---------------------------------------------------------------------------------


def test_distillation_lowers_the_kl_and_the_bare_student_comes_closer_to_the_prompted_teacher():
    tokenizer = _tokenizer(None)
    student = sharp_lm(tokenizer)
    teacher = copy.deepcopy(student)
    base = copy.deepcopy(student)
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    train, held_out = conversations(32, seed=1), conversations(8, seed=2)

    def kl(model, examples):
        return measure_kl(model, teacher, tokenizer, examples, prompt=PROMPT, mode="chat")

    train_before, held_out_before = kl(student, train), kl(student, held_out)
    assert train_before > 0.05  # the prompt changes what the base LM predicts
    steps = []
    result = train_distillation(
        student,
        teacher,
        tokenizer,
        train,
        config(),
        prompt=PROMPT,
        mode="chat",
        eval_set=held_out,
        on_step=lambda step, total, metrics: steps.append((step, total)),
    )
    assert result.status == "completed" and result.steps == 20
    assert steps == [(s, 20) for s in range(1, 21)]
    first, last = result.history[0]["kl"], sum(m["kl"] for m in result.history[-5:]) / 5
    assert last < first / 2, (first, last)

    # Without the prompt, the trained student now predicts much as the prompted base LM does,
    # on the training conversations and on ones it never saw.
    train_after, held_out_after = kl(student, train), kl(student, held_out)
    assert train_after < train_before / 2, (train_before, train_after)
    assert held_out_after < held_out_before / 2, (held_out_before, held_out_after)
    assert result.metrics["eval_kl_before"] == pytest.approx(held_out_before, rel=1e-4)
    assert result.metrics["eval_kl"] == pytest.approx(held_out_after, rel=1e-4)

    # Every student parameter moved; the teacher is the base LM, untouched and frozen.
    unchanged = [n for n, p in student.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []
    for (name, p), (_, q) in zip(teacher.named_parameters(), base.named_parameters(), strict=True):
        assert torch.equal(p, q) and not p.requires_grad, name


def test_bf16_autocast_and_gradient_accumulation_run():
    tokenizer = _tokenizer(None)
    student = sharp_lm(tokenizer)
    result = train_distillation(
        student,
        copy.deepcopy(student),
        tokenizer,
        conversations(16, seed=4),
        config(max_steps=2, batch_size=4, grad_accum=2, bf16=True),
        prompt=PROMPT,
        mode="completion",
        eval_set=conversations(4, seed=5),
    )
    assert result.steps == 2 and all(math.isfinite(m["kl"]) for m in result.history)
    assert result.metrics["eval_kl"] >= 0 and "eval_kl_before" in result.metrics
    assert next(student.parameters()).dtype == torch.float32  # autocast, not a cast


def test_bf16_auto_distils_in_float32_where_bf16_is_emulated_and_an_explicit_request_warns(
    monkeypatch, caplog, settings
):
    from assistant import hardware

    settings.ALIGNLAB_BF16 = "auto"  # the probe decides, whatever the environment says
    monkeypatch.setattr(hardware, "_probe", lambda device_type: False)  # an AVX2-only CPU
    assert DistillationConfig().bf16 == "auto"
    tokenizer = _tokenizer(None)
    student = sharp_lm(tokenizer)
    teacher = copy.deepcopy(student)
    computed = set()
    for module in [*student.modules(), *teacher.modules()]:
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: computed.add(out.dtype))
    for bf16 in ("auto", True):
        computed.clear()
        caplog.clear()
        with caplog.at_level("WARNING", logger="training.distill"):
            train_distillation(
                student,
                teacher,
                tokenizer,
                conversations(8, seed=4),
                config(max_steps=1, batch_size=4, bf16=bf16),
                prompt=PROMPT,
                mode="completion",
                eval_set=conversations(2, seed=5),
            )
        # The teacher's prompt cache is computed once, in float32, before the loop autocasts.
        assert (torch.bfloat16 in computed) == (bf16 is True) and torch.float32 in computed
        assert ("far slower" in caplog.text) == (bf16 is True)


def test_a_cancelled_distillation_resumes_like_an_uninterrupted_one(tmp_path):
    tokenizer = _tokenizer(None)
    train = conversations(32, seed=3)
    cfg = config(max_steps=6, checkpoint_every=3, batch_size=4)

    def fresh():
        student = sharp_lm(tokenizer)
        return student, copy.deepcopy(student)

    student, teacher = fresh()
    straight = train_distillation(
        student, teacher, tokenizer, train, cfg, prompt=PROMPT, mode="chat"
    )
    straight_params = {n: p.detach().clone() for n, p in student.named_parameters()}

    polls = iter([False, False, False, True])
    student, teacher = fresh()
    first = train_distillation(
        student,
        teacher,
        tokenizer,
        train,
        cfg,
        prompt=PROMPT,
        mode="chat",
        should_stop=lambda: next(polls),
        checkpoint_dir=tmp_path,
    )
    assert first.status == "cancelled" and first.steps == 3

    student, teacher = fresh()
    resumed = train_distillation(
        student, teacher, tokenizer, train, cfg, prompt=PROMPT, mode="chat", checkpoint_dir=tmp_path
    )
    assert resumed.status == "completed" and resumed.steps == 6 and len(resumed.history) == 6
    assert [m["kl"] for m in resumed.history] == pytest.approx(
        [m["kl"] for m in straight.history], rel=1e-4, abs=1e-6
    )
    for name, p in student.named_parameters():
        assert torch.allclose(p, straight_params[name], atol=1e-5), name
    # Another prompt is other training data: its run never resumes these checkpoints.
    student, teacher = fresh()
    with pytest.raises(ValueError, match="different training data"):
        train_distillation(
            student,
            teacher,
            tokenizer,
            train,
            cfg,
            prompt=PROMPT + " Be brief.",
            mode="chat",
            checkpoint_dir=tmp_path,
        )
