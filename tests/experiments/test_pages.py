"""The report page, its downloads and the curves page: role and ownership checks, every number
with its interval, verdicts from the numbers."""

import csv
import io
import json

import pytest
from django.urls import reverse

from assistant.services import model_version_register
from experiments import services
from tests.experiments.conftest import finish_with_numbers, two_by_two

# Ranked beats binary by 10 points at "all" (of 400 held-out pairs each).
NUMBERS = {("ranked", 16): 240, ("ranked", None): 300, ("binary", 16): 230, ("binary", None): 260}


@pytest.fixture
def backbone(tmp_path):
    return model_version_register(kind="lm", name="unloaded", path=str(tmp_path))


@pytest.fixture
def finished(snapshot, backbone, rita, tmp_path):
    experiment = services.experiment_create(data=two_by_two(snapshot, backbone), launched_by=rita)
    return finish_with_numbers(experiment, NUMBERS, tmp_path)


@pytest.mark.django_db
def test_the_report_shows_every_cell_interval_and_verdict(client, rita, finished):
    assert finished.status == "succeeded" and finished.cells_done == 4
    client.force_login(rita)
    page = client.get(reverse("experiments:detail", args=[finished.pk])).content.decode()
    assert page.count('<tr class="cell">') == 4
    assert "0.750 [0.705, 0.790]" in page  # ranked at all: 300/400 with its Wilson interval
    assert "ranked (held_out) &gt; binary (held_out): yes, +10.0 points [" in page
    assert "ranked beats binary" in page  # the claim, next to its verdict
    assert page.count("<svg") >= 4  # the curves, the HHH bars, calibration diagrams
    assert "training comparisons (log scale)" in page and "harmless" in page
    standalone = client.get(reverse("experiments:download", args=[finished.pk, "html"]))
    assert standalone["Content-Disposition"].endswith('.html"')
    body = standalone.content.decode()
    assert "<style>" in body and "<script" not in body and 'href="/static' not in body
    assert "yes, +10.0 points" in body
    data = json.loads(
        client.get(reverse("experiments:download", args=[finished.pk, "json"])).content
    )
    assert len(data["cells"]) == 4 and data["findings"][0]["reproduced"] is True
    ranked = data["curves"]["held_out"]["ranked"]
    assert [point[0] for point in ranked] == [16, finished.spec["train_rankings"]]
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(
                    reverse("experiments:download", args=[finished.pk, "csv"])
                ).content.decode()
            )
        )
    )
    assert {r["metric"] for r in rows} == {"held_out", "hhh"}
    assert {r["category"] for r in rows if r["metric"] == "hhh"} >= {"overall", "harmless"}


@pytest.mark.django_db
def test_the_verdict_turns_with_the_numbers(client, rita, snapshot, backbone, tmp_path):
    flipped = {**NUMBERS, ("ranked", None): 250}  # now binary is ahead by 2.5 points
    experiment = services.experiment_create(data=two_by_two(snapshot, backbone), launched_by=rita)
    experiment = finish_with_numbers(experiment, flipped, tmp_path)
    client.force_login(rita)
    page = client.get(reverse("experiments:detail", args=[experiment.pk])).content.decode()
    assert (
        "ranked (held_out) &gt; binary (held_out): no (not significant at this scale), −2.5" in page
    )


@pytest.mark.django_db
def test_roles_and_ownership(client, alice, rita, adam, django_user_model, finished):
    client.force_login(alice)
    for name, args in [
        ("list", []),
        ("curves", []),
        ("detail", [finished.pk]),
        ("download", [finished.pk, "csv"]),
    ]:
        assert client.get(reverse(f"experiments:{name}", args=args)).status_code == 403
    assert client.post(reverse("experiments:cancel", args=[finished.pk])).status_code == 403
    assert client.get(reverse("evals:data_efficiency")).status_code == 403
    other = django_user_model.objects.create_user("rob")
    other.groups.add(rita.groups.get())
    client.force_login(other)
    assert client.post(reverse("experiments:cancel", args=[finished.pk])).status_code == 403
    assert client.get("/api/experiments/").status_code == 200
    assert client.post(f"/api/experiments/{finished.pk}/cancel/").status_code == 403
    client.force_login(adam)
    assert client.post(reverse("experiments:cancel", args=[finished.pk])).status_code == 302


@pytest.mark.django_db
def test_the_data_efficiency_page_is_the_experiments_curves(client, rita, finished):
    client.force_login(rita)
    response = client.get(reverse("evals:data_efficiency"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("experiments:curves")
    page = response.content.decode()
    assert "ranked vs binary: held-out accuracy" in page and "<svg" in page


@pytest.mark.django_db
def test_the_form_and_the_api_define_experiments(client, rita, snapshot, backbone):
    import yaml

    client.force_login(rita)
    definition = two_by_two(snapshot, backbone)
    bad = client.post(reverse("experiments:list"), {"definition": "sizes: [1, 1]\nname: x"})
    assert bad.status_code == 400 and "conditions" in bad.content.decode()
    good = client.post(reverse("experiments:list"), {"definition": yaml.safe_dump(definition)})
    assert good.status_code == 302
    api = client.post(
        "/api/experiments/", {"definition": definition}, content_type="application/json"
    )
    assert api.status_code == 201, api.content
    refused = client.post(
        "/api/experiments/",
        {"definition": {**definition, "sizes": [-3]}},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "sizes" in refused.content.decode()
    report = client.get(f"/api/experiments/{api.json()['id']}/report/")
    assert report.status_code == 200 and len(report.json()["cells"]) == 4
