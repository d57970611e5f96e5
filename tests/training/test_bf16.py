"""bf16 asked for on a CPU that only emulates it: the launch form and the run's log say so."""

import json
import random

import pytest
from django.urls import reverse

from assistant import hardware
from assistant.services import model_version_register
from collection.imports import dataset_import_create
from collection.snapshots import snapshot_create
from tests.tinymodels import save_tiny_lm
from training import services
from training.models import TrainingRun

SMALL = {"max_steps": 1, "batch_size": 4, "max_length": 64, "eval_every": 0}


@pytest.fixture
def emulated(monkeypatch, settings):
    """A CPU without native bf16, such as the AVX2-only EPYC of issue 12."""
    settings.ALIGNLAB_BF16 = "auto"  # the probe decides, whatever the environment says
    monkeypatch.setattr(hardware, "_probe", lambda device_type: False)


@pytest.fixture
def backbone(tmp_path):
    return model_version_register(kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path / "lm")))


@pytest.fixture
def snapshot(tmp_path, adam):
    rng, path = random.Random(0), tmp_path / "pairs.jsonl"
    with path.open("w") as f:
        for i in range(16):
            word = rng.choice(["sea", "bread", "tea", "maps"])
            f.write(
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": f"About {word} ({i})?"}],
                        "chosen": [{"role": "assistant", "content": f"Glad to help: {word}."}],
                        "rejected": [{"role": "assistant", "content": "No."}],
                    }
                )
                + "\n"
            )
    imported = dataset_import_create(path=path, format="trl")
    return snapshot_create(
        filter={"sources": ["imported"], "imports": [imported.pk]}, created_by=adam
    )


@pytest.mark.django_db
def test_the_run_log_says_an_explicit_bf16_request_will_be_far_slower(backbone, snapshot, emulated):
    logs = {}
    for bf16 in (True, "auto"):
        run = services.training_run_create(
            kind="pm", snapshot=snapshot, base_model=backbone, config={**SMALL, "bf16": bf16}
        )
        run = services.training_run_execute(run=services.training_run_claim(run_id=run.pk))
        assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
        logs[bf16] = run.log_tail
    assert "bf16 was requested" in logs[True] and "far slower" in logs[True]
    assert "bf16" not in logs["auto"]


@pytest.mark.django_db
def test_the_launch_form_says_an_explicit_bf16_request_will_be_far_slower(
    client, adam, backbone, snapshot, emulated
):
    client.force_login(adam)
    page = client.get(reverse("training:runs")).content.decode()
    assert 'name="bf16"' in page and "far slower" in page  # the field's help, before launching

    launch = {"kind": "pm", "snapshot": snapshot.pk, "base_model": backbone.pk, "max_steps": 1}
    response = client.post(reverse("training:runs"), {**launch, "bf16": "on"}, follow=True)
    run = TrainingRun.objects.latest("pk")
    assert run.config["bf16"] is True
    assert "bf16 was requested" in response.content.decode()

    response = client.post(reverse("training:runs"), launch, follow=True)  # bf16 left "auto"
    assert TrainingRun.objects.latest("pk").config["bf16"] == "auto"
    assert "bf16 was requested" not in response.content.decode()
    client.post(reverse("training:runs"), {**launch, "bf16": "off"})
    assert TrainingRun.objects.latest("pk").config["bf16"] is False
