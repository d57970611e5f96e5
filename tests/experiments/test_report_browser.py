"""The report page in Chromium: a researcher opens an experiment from the menu and reads its
verdicts, curves and cells; the screenshot is kept in test-artifacts/."""

import pytest

from assistant.services import model_version_register
from experiments import services
from tests.browser import chromium_page, sign_in
from tests.experiments.conftest import finish_with_numbers, two_by_two
from tests.experiments.test_pages import NUMBERS

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_the_report_page_in_a_browser(live_server, rita, snapshot, tmp_path, artifacts_dir):
    backbone = model_version_register(kind="lm", name="unloaded", path=str(tmp_path))
    experiment = services.experiment_create(data=two_by_two(snapshot, backbone), launched_by=rita)
    experiment = finish_with_numbers(experiment, NUMBERS, tmp_path)
    with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        sign_in(page, live_server.url, "rita", "pw-rita")
        page.click("nav >> text=Experiments")
        page.click(f"text={experiment.name}")
        assert page.locator("tr.cell").count() == 4
        verdict = page.locator("table.findings tbody tr").first.inner_text()
        assert "yes, +10.0 points" in verdict and "ranked beats binary" in verdict
        assert page.locator("svg[aria-label='held-out accuracy vs comparisons']").count() == 1
        page.screenshot(path=str(artifacts_dir / "experiment-report.png"), full_page=True)
