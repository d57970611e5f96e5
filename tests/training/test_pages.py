"""The training pages: the launch form (every kind, real settings, errors next to the field),
the run page (chart, metrics table, lr in scientific notation, promotion), the cancel step."""

import re

import pytest
from django.urls import reverse

from assistant.models import ModelVersion
from collection.models import DatasetSnapshot
from training.formatting import format_log_line, format_metric
from training.forms import cpuinfo_has_native_bf16
from training.models import TrainingRun


@pytest.fixture
def snapshot(db):
    return DatasetSnapshot.objects.create(
        name="June <HHH> pairs",
        filter={},
        counts={"train_pairs": 120, "held_out_pairs": 14},
        content_hash="ab" * 32,
    )


@pytest.fixture
def backbone(db, tmp_path):
    return ModelVersion.objects.create(kind="lm", name="tiny-backbone", path=str(tmp_path))


@pytest.fixture
def admin_client(client, adam):
    client.force_login(adam)
    return client


def launch(client, **values):
    return client.post(reverse("training:runs"), values)


def test_metrics_and_log_lines_write_learning_rates_in_scientific_notation():
    assert format_metric("lr", 5.45e-06) == "5.45e-06"
    assert format_metric("lr", 0.0) == "0.00e+00"
    assert format_metric("loss", 0.693147) == "0.6931"
    assert format_metric("grad_norm", 2.5e-7) == "2.50e-07"  # never 0.0000
    assert format_metric("step", 12) == "12" and format_metric("accuracy", None) == "—"
    line = format_log_line(3, 12, {"step": 3, "loss": 0.5, "lr": 5.45e-06, "accuracy": None})
    assert line == "step 3/12 loss=0.5000 lr=5.45e-06 accuracy=—"


@pytest.mark.django_db
def test_the_launch_form_offers_every_kind_models_and_snapshots_by_name(
    admin_client, snapshot, backbone
):
    page = admin_client.get(reverse("training:runs")).content.decode()
    for kind in TrainingRun.Kind.values:
        assert f'value="{kind}"' in page, kind
    assert "preference-model pre-training" in page
    # The snapshot by its name (escaped), not "snapshot 1 abab…".
    assert "June &lt;HHH&gt; pairs (#" in page and "120 train / 14 held-out pairs" in page
    assert "June <HHH>" not in page
    assert f"tiny-backbone (#{backbone.pk}, language model: backbone)" in page
    # The hyperparameters with their kinds' defaults and ranges.
    for name in ("lr", "max_steps", "batch_size", "grad_accum", "warmup_steps", "max_length"):
        assert f'name="{name}"' in page, name
    assert "2.00e-05 (PM, binary, imitation)" in page and "5.00e-05 (PMP)" in page
    assert "1.00e-05 (distillation)" in page
    assert 'name="bf16"' in page


@pytest.mark.django_db
def test_launching_a_pm_run_from_the_page_goes_through_the_service(
    admin_client, adam, snapshot, backbone, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = launch(
            admin_client,
            kind="pm",
            snapshot=snapshot.pk,
            base_model=backbone.pk,
            lr="5e-5",
            max_steps="30",
            batch_size="4",
            bf16="off",
        )
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("training:run", args=[run.pk])
    assert (run.kind, run.snapshot, run.base_model, run.launched_by) == (
        "pm",
        snapshot,
        backbone,
        adam,
    )
    # The settings given, the kind's defaults for the rest (the service's config dataclass).
    assert run.config["lr"] == 5e-5 and run.config["max_steps"] == 30
    assert run.config["batch_size"] == 4 and run.config["bf16"] is False
    assert run.config["loss"] == "ranked" and run.config["warmup_steps"] == 10


@pytest.mark.django_db
def test_out_of_range_settings_are_refused_next_to_their_fields(admin_client, snapshot):
    response = launch(
        admin_client, kind="pm", snapshot=snapshot.pk, lr="5", batch_size="0", max_length="7"
    )
    assert response.status_code == 400 and not TrainingRun.objects.exists()
    page = response.content.decode()
    for name, message in [
        ("lr", "lr must be above 0 to 1, not 5.0"),
        ("batch_size", "batch_size must be from 1 to 4096, not 0"),
        ("max_length", "max_length must be from 8 to 32768, not 7"),
    ]:
        # The message inside the field's own block, after its input.
        block = re.search(
            rf'<div class="field has-error">\s*<label for="id_{name}">.*?</div>\s*</div>',
            page,
            re.S,
        )
        assert block and message in block.group(0), (name, page)


@pytest.mark.django_db
def test_the_service_s_errors_land_on_their_fields(admin_client, snapshot, settings, tmp_path):
    # A setting the kind has not.
    response = launch(admin_client, kind="distill", snapshot=snapshot.pk, lora="on")
    assert response.status_code == 400
    assert "has no lora setting" in response.content.decode()
    # PMP files outside the data roots; a kind that needs a snapshot without one.
    settings.ALIGNLAB_DATA_ROOTS = [str(tmp_path)]
    response = launch(admin_client, kind="pmp", pmp_sources="reddit /etc/passwd")
    assert "no file or folder &#x27;/etc/passwd&#x27; inside the data roots" in (
        response.content.decode()
    )
    response = launch(admin_client, kind="pm")
    assert "this kind trains on a dataset snapshot" in response.content.decode()
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_pmp_is_launched_with_its_sources(
    admin_client, settings, tmp_path, django_capture_on_commit_callbacks
):
    source = tmp_path / "reddit.jsonl"
    source.write_text("{}\n")
    settings.ALIGNLAB_DATA_ROOTS = [str(tmp_path)]
    with django_capture_on_commit_callbacks(execute=False):
        response = launch(admin_client, kind="pmp", pmp_sources=f"reddit {source}", epochs="2")
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert run.kind == "pmp" and run.pmp_sources == [{"format": "reddit", "path": str(source)}]
    assert run.config["epochs"] == 2 and run.config["lr"] == 5e-5


@pytest.fixture
def trained_run(db, snapshot):
    metrics = [
        {"step": s, "loss": 0.7 - 0.02 * s, "accuracy": 0.5 + 0.02 * s, "lr": 5.45e-06 * s}
        for s in range(1, 11)
    ]
    metrics[-1] |= {"eval_loss": 0.55, "eval_accuracy": 0.71, "eval_pairs": 14}
    return TrainingRun.objects.create(
        kind="pm",
        snapshot=snapshot,
        status="succeeded",
        steps_done=10,
        steps_total=10,
        metrics=metrics,
        config={"lr": 2e-05, "batch_size": 8},
        log_tail="step 10/10 loss=0.5000 lr=5.45e-05\n",
        promotion={
            "decision": "kept",
            "outcome": "tie",
            "held_out": 240,
            "new_accuracy": 0.7,
            "active_accuracy": 0.69,
            "difference": 0.01,
            "new_only_right": 12,
            "active_only_right": 10,
            "p_value": 0.831,
            "interval": [-0.04, 0.06],
            "interval_of": "accuracy difference new − active",
            "test": "exact McNemar test",
            "reason": "no significant difference <b>",
        },
    )


@pytest.mark.django_db
def test_the_run_page_shows_a_chart_a_metrics_table_and_the_promotion(admin_client, trained_run):
    page = admin_client.get(reverse("training:run", args=[trained_run.pk])).content.decode()
    # Two server-rendered SVG charts with axes labels and legends.
    assert page.count("<svg") == 2
    assert "Loss over steps" in page and "Pairwise accuracy over steps" in page
    assert "optimizer step" in page and "held-out accuracy" in page and "<polyline" in page
    # The metrics as a table, not a Python dict; lr in scientific notation.
    assert "{&#x27;step&#x27;" not in page and "{'step'" not in page
    assert "<th>lr</th>" in page and "<td>5.45e-06</td>" in page and "0.0000" not in page
    assert "June &lt;HHH&gt; pairs (#" in page
    # The promotion decision: its reason (escaped), the test and its numbers.
    assert "No significant difference &lt;b&gt;" in page and "<b>" not in page
    assert "exact McNemar test" in page and "0.831" in page and "[-0.040, 0.060]" in page
    assert "not promoted" in page


@pytest.mark.django_db
def test_cancelling_asks_for_a_confirmation_first(admin_client, snapshot):
    run = TrainingRun.objects.create(kind="pm", snapshot=snapshot, status="running")
    page = admin_client.get(reverse("training:run", args=[run.pk])).content.decode()
    cancel_url = reverse("training:cancel", args=[run.pk])
    # A link to the confirmation, styled as a danger action, not a primary button.
    assert f'<a class="button danger" href="{cancel_url}">Cancel run…</a>' in page
    confirm = admin_client.get(cancel_url)
    assert confirm.status_code == 200 and 'name="confirm"' in confirm.content.decode()
    refused = admin_client.post(cancel_url, {})
    assert refused.status_code == 400 and "Tick the box" in refused.content.decode()
    run.refresh_from_db()
    assert not run.cancel_requested
    done = admin_client.post(cancel_url, {"confirm": "on"})
    assert done.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested


@pytest.mark.django_db
def test_only_admins_launch_watch_and_cancel(client, rita, trained_run, snapshot):
    client.force_login(rita)
    running = TrainingRun.objects.create(kind="pm", snapshot=snapshot, status="running")
    for method, name, args in [
        ("get", "training:runs", []),
        ("post", "training:runs", []),
        ("get", "training:run", [trained_run.pk]),
        ("get", "training:cancel", [running.pk]),
        ("post", "training:cancel", [running.pk]),
    ]:
        response = getattr(client, method)(reverse(name, args=args), {"confirm": "on"})
        assert response.status_code == 403, (method, name)
    running.refresh_from_db()
    assert not running.cancel_requested and TrainingRun.objects.count() == 2


def test_the_cpu_flags_say_whether_bf16_is_native():
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    avx512 = "flags\t: fpu avx2 avx512f avx512dq avx512bw avx512vl\n"
    amx = "flags\t: fpu avx2 amx_bf16 amx_tile\n"
    assert not cpuinfo_has_native_bf16(avx2) and not cpuinfo_has_native_bf16("")
    assert cpuinfo_has_native_bf16(avx512) and cpuinfo_has_native_bf16(amx)


@pytest.mark.django_db
@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_bf16_choice_says_what_this_cpu_does(admin_client, settings, setting):
    settings.ALIGNLAB_BF16 = setting  # stands in for a CPU with (on) or without (off) native bf16
    page = admin_client.get(reverse("training:runs")).content.decode()
    if setting == "on":
        assert "auto (bf16 here: this CPU computes it natively)" in page
        assert "far slower" not in page
    else:
        assert "auto (float32 here: no native bf16 on this CPU)" in page
        assert "on: emulated here, far slower (~80x)" in page
