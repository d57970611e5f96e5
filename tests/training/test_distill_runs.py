"""Context distillation as a training run: the snapshot's conversations, the distilled LM it
registers, launches checked, the runs page."""

import copy
import json
import random
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from assistant.models import ModelVersion
from assistant.services import model_version_register, prompt_template_create
from collection.snapshots import snapshot_create
from tests.collection.dataset_builders import judgement_write
from tests.training.distill_builders import (
    PROMPT,
    WORDS,
    _tokenizer,
    sharp_lm,
)
from training import services
from training.distill import (
    measure_kl,
)
from training.models import TrainingRun
from training.snapshots import snapshot_conversations

# The machine is shared: each test keeps to one core (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


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
    from collection.models import Campaign, Conversation, Response, Turn

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
            judgement_write(turn, contractor, [better.pk, worse.pk], origin="conversation")
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
def test_eval_conversations_measures_the_held_out_kl_on_the_first_few(alice, sharp_backbone):
    prompt_template_create(name="hhh", text=PROMPT)
    snapshot = collected_snapshot(alice, sharp_backbone, conversations=80)  # 3 held out
    _, held_out = snapshot_conversations(snapshot)
    assert len(held_out) > 1
    run = services.training_run_create(
        kind="distill",
        snapshot=snapshot,
        base_model=sharp_backbone,
        config={"max_steps": 1, "batch_size": 8, "min_conversations": 20, "eval_conversations": 1},
    )
    run = services.training_run_execute(run=services.training_run_claim(run_id=run.pk))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
    assert run.result_version.metadata["conversations"]["held_out"] == 1
    assert any(key.startswith("eval_") for key in run.metrics[-1])  # measured, on that one


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
