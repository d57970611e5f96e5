"""Issue 14: the promotion decision also reports the new PM's agreement with the latest human
judgements it did not train on (those made after its snapshot); the run page shows it."""

import pytest
from django.urls import reverse

from collection.models import Campaign
from collection.pm_loop import fresh_agreement
from tests.collection.dataset_builders import collected
from tests.training.test_runs import TINY_CONFIG, backbone, execute, snapshot  # noqa: F401
from training import services


@pytest.mark.django_db
def test_a_pm_run_reports_its_agreement_with_judgements_after_its_snapshot(
    backbone,  # noqa: F811 (the fixture imported from test_runs)
    snapshot,  # noqa: F811
    adam,
    alice,
    client,  # noqa: F811
):
    campaign = Campaign.objects.create(name="after the snapshot", k=2)
    for i in range(5):  # made after the snapshot: the new PM never saw them
        collected(campaign, alice, [(f"fresh question {i}", [f"good {i}", f"bad {i}"], [0, 1], 2)])
    run = services.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config=TINY_CONFIG, launched_by=adam
    )
    run = execute(run)
    assert run.status == "succeeded", run.error + run.log_tail
    recent = run.promotion["recent_agreement"]
    assert recent["n"] == 5 and recent["since"] == snapshot.created_at.isoformat()
    assert 0 <= recent["agree"] <= 5 and recent["low"] <= recent["high"]
    # The same numbers as scoring those judgements with the saved PM afterwards.
    from assistant.pm import PMScorer

    again = fresh_agreement(
        PMScorer.from_path(run.result_version.path, bf16=False), since=snapshot.created_at
    )
    assert again["agree"] == recent["agree"]
    client.force_login(adam)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert "agreement with recent judgements it did not train on" in page
    assert "of the latest 5" in page
