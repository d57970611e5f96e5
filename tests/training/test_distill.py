"""Context distillation: the KL, the teacher/student alignment, training, and the run end to end."""

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from assistant.models import ModelVersion
from assistant.services import model_version_register, prompt_template_create
from collection.snapshots import snapshot_create
from tests.tinymodels import tiny_causal_lm, tiny_tokenizer
from training import services
from training.config import DistillationConfig
from training.distill import (
    ConversationTokens,
    DistillationExample,
    PromptedTeacher,
    collate_rows,
    distillation_kl,
    measure_kl,
    train_distillation,
)
from training.models import TrainingRun
from training.snapshots import snapshot_conversations

PROMPT = (
    "Below are dialogues between people and an assistant that is helpful, honest and harmless."
    "\n\nHuman: Can you help me with a poem?\n\nAssistant: Of course, I am glad to help."
)
WORDS = "the sea poem short answer help light waves think safer try capital France Paris".split()
# A template like SmolLM2's: without a system message it writes a default one of its own.
DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a small bot.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def one_thread():
    # The machine is shared: keep each test to one core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    base = dict(
        lr=3e-3,
        warmup_steps=0,
        batch_size=8,
        max_steps=20,
        eval_every=0,
        checkpoint_every=0,
        max_length=64,
        min_conversations=1,
        # float32: tests compare KLs to 1e-4, beyond bf16 (the default where it is native).
        bf16=False,
    )
    return DistillationConfig(**{**base, **overrides})


# --- the loss ---------------------------------------------------------------------------------


def test_the_kl_is_the_hand_computed_one_and_zero_only_for_equal_distributions():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    q = torch.tensor([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]])
    # Position 1: 0.5 ln 2 + 0.25 ln(1/2) + 0 = 0.25 ln 2; position 2: equal, 0. Mean: 0.125 ln 2.
    kl = distillation_kl(p.log(), q.log())
    assert kl.item() == pytest.approx(0.125 * math.log(2), abs=1e-6)
    # The teacher comes first: KL is not symmetric.
    r = torch.tensor([[0.8, 0.1, 0.1]])
    s = torch.tensor([[0.4, 0.4, 0.2]])
    by_hand = 0.8 * math.log(2) + 0.1 * math.log(0.25) + 0.1 * math.log(0.5)
    assert distillation_kl(r.log(), s.log()).item() == pytest.approx(by_hand, abs=1e-6)
    assert distillation_kl(s.log(), r.log()).item() != pytest.approx(by_hand, abs=1e-3)
    # Equal distributions: zero, whatever constant the logits are shifted by.
    logits = torch.randn(5, 11)
    assert distillation_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_kl(logits, logits + 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits, logits.flip(-1)).item() > 0.1
    # The student's gradient is softmax(student) - teacher, over the positions' count.
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_kl(p[:1].log(), student).backward()
    assert torch.allclose(student.grad, torch.full((1, 3), 1 / 3) - p[:1], atol=1e-6)


# --- what each model reads -------------------------------------------------------------------


def _tokenizer(template: str | None):
    tokenizer = copy.deepcopy(tiny_tokenizer())
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize(
    "mode, template",
    [("chat", None), ("chat", DEFAULT_SYSTEM_TEMPLATE), ("completion", None)],
    ids=["chat", "chat-default-system", "completion"],
)
def test_teacher_and_student_rows_line_up_on_the_conversation(mode, template):
    tokenizer = _tokenizer(template)
    model = sharp_lm(tokenizer)
    rendering = ConversationTokens(tokenizer, prompt=PROMPT, mode=mode, max_length=256)
    examples = conversations(3, seed=1, turns=2)
    rows = [rendering(example) for example in examples]
    for row, example in zip(rows, examples, strict=True):
        student_text = tokenizer.decode(row.student_ids)
        assert "helpful, honest and harmless" not in student_text  # no prompt for the student
        assert row.teacher_ids[0] == rendering.prefix_ids[-1]
        assert student_text.endswith(example.messages[-1]["content"])
        # The compared tokens are the same on both sides, and they are the conversation.
        n = row.targets
        assert n > 20 and row.teacher_ids[-n:] == row.student_ids[-n:]
        assert example.messages[0]["content"] in tokenizer.decode(row.student_ids[-n:])
    if template is DEFAULT_SYSTEM_TEMPLATE:
        # The student's default system message is its own; the teacher has the HHH one instead.
        assert tokenizer.decode(rows[0].student_ids).startswith("<|im_start|>system\nYou are")
        assert rows[0].targets == len(rows[0].student_ids) - len(
            tokenizer("<|im_start|>system\nYou are a small bot.<|im_end|>\n").input_ids
        )
    else:
        # Nothing before the conversation: the student cannot predict its very first token.
        assert all(row.targets == len(row.student_ids) - 1 for row in rows)

    # The cached prompt gives the logits of one long forward over prompt + conversation.
    teacher = PromptedTeacher(copy.deepcopy(model), rendering.prefix_ids)
    batch = collate_rows(rows, tokenizer.pad_token_id)
    cached = teacher.logits(batch["teacher_ids"], batch["teacher_mask"], batch["teacher_compare"])
    assert not cached.is_inference()
    full_prompted, bare = [], []
    with torch.no_grad():
        for row in rows:
            ids = rendering.prefix_ids[:-1] + row.teacher_ids
            end = len(ids) - 1
            full_prompted.append(model(torch.tensor([ids])).logits[0, end - row.targets : end])
            end = len(row.student_ids) - 1
            logits = model(torch.tensor([row.student_ids])).logits[0]
            bare.append(logits[end - row.targets : end])
    full_prompted, bare = torch.cat(full_prompted), torch.cat(bare)
    assert cached.shape == full_prompted.shape == bare.shape
    assert torch.allclose(cached, full_prompted, atol=1e-4)
    # Student == teacher on identical inputs: no distance. Without the prompt: a real one.
    assert distillation_kl(cached, full_prompted).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(cached, bare).item() > 0.01


def test_long_conversations_keep_their_end_and_examples_must_end_with_a_response():
    tokenizer = _tokenizer(None)
    example = conversations(1, seed=2, turns=3)[0]
    whole = ConversationTokens(tokenizer, prompt=PROMPT, mode="chat", max_length=512)(example)
    rendering = ConversationTokens(tokenizer, prompt=PROMPT, mode="chat", max_length=16)
    row = rendering(example)
    assert len(whole.student_ids) > 60
    assert row.student_ids == whole.student_ids[-16:] and row.targets == 15
    assert row.teacher_ids == rendering.prefix_ids[-1:] + row.student_ids
    with pytest.raises(ValueError, match="assistant's response last"):
        DistillationExample([{"role": "user", "content": "hello?"}])
    with pytest.raises(ValueError, match="needs a prompt"):
        ConversationTokens(tokenizer, prompt="  ", mode="chat", max_length=16)
    with pytest.raises(ValueError, match="render_mode must be one of"):
        DistillationConfig(render_mode="raw")
    with pytest.raises(ValueError, match="unknown DistillationConfig keys: loss"):
        DistillationConfig.from_dict({"loss": "ranked"})


def test_a_prompt_and_conversation_past_the_models_window_are_refused():
    tokenizer = _tokenizer(None)
    student = sharp_lm(tokenizer)  # 512 positions
    long_prompt = " ".join([PROMPT] * 20)
    with pytest.raises(ValueError, match="positions; the model has 512: lower max_length"):
        train_distillation(
            student,
            copy.deepcopy(student),
            tokenizer,
            conversations(8, seed=1),
            config(),
            prompt=long_prompt,
            mode="chat",
        )


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


# --- the run, through the service -----------------------------------------------------------


@pytest.fixture
def sharp_backbone(tmp_path):
    tokenizer = _tokenizer(None)
    sharp_lm(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    return model_version_register(
        kind="lm",
        name="tiny sharp",
        path=str(tmp_path / "lm"),
        generation_defaults={"temperature": 0.7},
    )


def collected_snapshot(contractor, lm, *, conversations: int, seed: int = 0):
    """Collected two-turn conversations, each turn judged, the better response not always A."""
    from collection.models import Campaign, Conversation, Judgement, Response, Turn

    rng = random.Random(seed)
    campaign = Campaign.objects.create(name="distil", lm_version=lm)
    for _ in range(conversations):
        conversation = Conversation.objects.create(campaign=campaign, contractor=contractor)
        for index in range(2):
            turn = Turn.objects.create(
                conversation=conversation,
                index=index,
                human_text=" ".join(rng.choices(WORDS, k=5)) + "?",
                status="judged",
            )
            a, b = Response.objects.bulk_create(
                [
                    Response(
                        turn=turn, index=i, text=" ".join(rng.choices(WORDS, k=6)), model_version=lm
                    )
                    for i in (0, 1)
                ]
            )
            better, worse = (a, b) if rng.random() < 0.5 else (b, a)
            Judgement.objects.create(
                turn=turn,
                contractor=contractor,
                origin="conversation",
                ranking=[better.pk, worse.pk],
                submitted_ranking=[better.pk, worse.pk],
            )
            turn.chosen_response = better
            turn.save(update_fields=["chosen_response"])
    return snapshot_create(filter={"sources": ["collected"]}, name="distil")


@pytest.mark.django_db
def test_the_snapshot_gives_one_conversation_each_with_chosen_turns_and_the_best_response(
    alice, sharp_backbone
):
    from collection.models import Turn

    snapshot = collected_snapshot(alice, sharp_backbone, conversations=12)
    train, held_out = snapshot_conversations(snapshot)
    assert len(train) + len(held_out) == 12
    for example in train + held_out:
        turn_id = int(example.source.rsplit(" ", 1)[1])
        last = Turn.objects.select_related("chosen_response").get(pk=turn_id)
        first = Turn.objects.select_related("chosen_response").get(
            conversation_id=last.conversation_id, index=0
        )
        assert last.index == 1  # the latest turn, carrying the whole conversation
        assert example.messages == [
            {"role": "user", "content": first.human_text},
            {"role": "assistant", "content": first.chosen_response.text},
            {"role": "user", "content": last.human_text},
            {"role": "assistant", "content": last.chosen_response.text},
        ]


@pytest.mark.django_db
def test_a_distillation_run_registers_a_distilled_lm(alice, adam, sharp_backbone, settings):
    prompt = prompt_template_create(name="hhh", text=PROMPT, notes="short, for tests")
    snapshot = collected_snapshot(alice, sharp_backbone, conversations=40)
    run = services.training_run_create(
        kind="distill",
        snapshot=snapshot,
        base_model=sharp_backbone,
        config={
            "lr": 3e-3,
            "warmup_steps": 0,
            "batch_size": 8,
            "max_steps": 8,
            "min_conversations": 20,
        },
        launched_by=adam,
    )
    assert run.prompt == prompt  # the latest HHH prompt, when none is named
    claimed = services.training_run_claim(run_id=run.pk)
    run = services.training_run_execute(run=claimed)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
    assert (run.steps_done, run.steps_total) == (8, 8)
    assert run.metrics[-1]["step"] == 8 and "kl" in run.metrics[-1]

    version = run.result_version
    assert (version.kind, version.origin, version.training_run_id) == ("lm", "trained", run.pk)
    assert not version.is_active  # an LM is not promoted by a training run
    assert version.path == run.artifact_path and version.path.startswith(str(settings.MODELS_DIR))
    assert version.metadata["distilled_from"] == sharp_backbone.pk
    assert version.metadata["prompt"] == prompt.key
    assert version.metadata["prompt_id"] == prompt.pk
    assert version.metadata["render_mode"] == "chat"
    assert version.metadata["snapshot"] == snapshot.content_hash
    conversations_used = version.metadata["conversations"]
    assert conversations_used["train"] + conversations_used["held_out"] == 40
    assert version.backend_options == {"mode": "chat"}
    assert version.generation_defaults == {"temperature": 0.7}
    meta = json.loads((Path(version.path) / "meta.json").read_text())
    assert meta["distilled_from"] == sharp_backbone.pk and meta["prompt"] == prompt.key
    assert meta["training_run"] == run.pk and meta["config"]["max_steps"] == 8

    # The artifact is an ordinary LM folder, and without the prompt it is nearer the prompted
    # base LM than the base LM itself is.
    distilled = AutoModelForCausalLM.from_pretrained(version.path)
    base = AutoModelForCausalLM.from_pretrained(sharp_backbone.path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(version.path)
    train, _ = snapshot_conversations(snapshot)

    def kl(model):
        return measure_kl(model, copy.deepcopy(base), tokenizer, train, prompt=PROMPT, mode="chat")

    assert kl(distilled) < kl(base) / 2


@pytest.mark.django_db
def test_a_distillation_run_on_too_few_conversations_fails_and_says_why(alice, sharp_backbone):
    snapshot = collected_snapshot(alice, sharp_backbone, conversations=3)
    run = services.training_run_create(kind="distill", snapshot=snapshot, base_model=sharp_backbone)
    run = services.training_run_execute(run=services.training_run_claim(run_id=run.pk))
    assert run.status == TrainingRun.Status.FAILED and run.result_version is None
    assert "needs at least 16 conversations" in run.error
    assert f"snapshot {snapshot.pk} has" in run.error
    assert not ModelVersion.objects.filter(origin="trained").exists()


@pytest.mark.django_db
def test_distillation_launches_are_checked(alice, sharp_backbone, tmp_path):
    from django.core.exceptions import ValidationError

    from assistant.models import PromptTemplate

    snapshot = collected_snapshot(alice, sharp_backbone, conversations=2)
    pm = model_version_register(kind="pm", name="a pm", path=str(tmp_path))
    prompt = prompt_template_create(name="brief", text=PROMPT)
    with pytest.raises(ValidationError, match="trains a language model"):
        services.training_run_create(kind="distill", snapshot=snapshot, base_model=pm)
    with pytest.raises(ValidationError, match="only context distillation reads a prompt"):
        services.training_run_create(kind="pm", snapshot=snapshot, prompt=prompt)
    with pytest.raises(ValidationError, match="render_mode"):
        services.training_run_create(
            kind="distill", snapshot=snapshot, config={"render_mode": "raw"}
        )
    with pytest.raises(ValidationError, match="snapshot"):
        services.training_run_create(kind="distill")
    PromptTemplate.objects.all().delete()
    with pytest.raises(ValidationError, match="needs a prompt"):
        services.training_run_create(kind="distill", snapshot=snapshot)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_the_admin_launches_a_distillation_run_from_the_runs_page(
    client, adam, alice, sharp_backbone
):
    from django.urls import reverse

    snapshot = collected_snapshot(alice, sharp_backbone, conversations=2)
    brief = prompt_template_create(name="brief", text=PROMPT)
    client.force_login(adam)
    page = client.get(reverse("training:runs")).content.decode()
    assert 'value="distill"' in page and "context distillation" in page
    response = client.post(
        reverse("training:runs"),
        {
            "kind": "distill",
            "snapshot": snapshot.pk,
            "base_model": sharp_backbone.pk,
            "prompt": brief.pk,
            "max_steps": 5,
        },
    )
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("training:run", args=[run.pk])
    assert (run.kind, run.prompt, run.config["max_steps"]) == ("distill", brief, 5)
    assert run.config["render_mode"] == "auto"
    detail = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert "Distilled prompt" in detail and brief.key in detail
