"""The first hour in the browser (issue 13, must show 1): on a fresh `make run` database, every
role does its whole job in AlignLab's own pages, in Chromium, against the live server and a real
Celery worker; no /admin/ URL is ever requested.

1. adam (admin) creates a campaign and launches a PM training run; the worker trains it and the
   run page shows its curves and metrics;
2. alice (contractor) holds a conversation in that campaign and judges one turn with the tie
   point ("about the same") and the next one on the scale;
3. rita (researcher) uploads an import file, builds a snapshot with the form's fields,
   downloads its export and finds alice's conversation by searching a word of her message.

Screenshots of each role's key pages go to test-artifacts/first-hour-*.png.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
from io import StringIO
from itertools import islice

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.urls import reverse

from assistant import runtime
from assistant.models import ModelVersion
from collection.models import (
    Campaign,
    Conversation,
    DatasetImport,
    DatasetSnapshot,
    ImportJob,
    Judgement,
)
from config.management.commands.seed_demo import DEMO_CAMPAIGN, DEMO_DATASET, DEMO_SNAPSHOT
from tests.browser import chromium_page, sign_in
from tests.tinymodels import save_tiny_lm
from tests.waiting import wait_until
from training.models import TrainingRun

pytestmark = pytest.mark.browser

CAMPAIGN = "First hour: trip planning"
# alice's first message: the word rita searches for later.
ALICE_SAYS = ("Which sourdough starter travels best?", "And how do I feed it on the road?")


# --- The database `make run` builds ---------------------------------------------------------


@pytest.fixture
def make_run_database(settings, tmp_path):
    """What `make run` does before it serves (migrate, prepare_default_model, seed_demo), with a
    tiny random LM registered and activated in place of prepare_default_model's SmolLM2 (far too
    slow to chat with and train in a browser test). Returns the demo users' passwords as
    seed_demo printed them."""
    settings.VAR_DIR = tmp_path / "var"  # seed_demo keeps the demo passwords there
    settings.VAR_DIR.mkdir()
    # What the migrations wrote, which an earlier transactional test's flush removed: the HHH
    # prompt (a data migration, run again here; get_or_create) and the role groups (made after
    # every migrate). Not serialized_rollback: it reloads the rows on top of a database that
    # still holds them when no transactional test ran before this one (an IntegrityError).
    importlib.import_module("assistant.migrations.0002_hhh_prompt_v1").add_hhh_prompt(
        django_apps, None
    )
    call_command("migrate", "--noinput", verbosity=0)
    lm_path = save_tiny_lm(tmp_path / "tiny-lm")
    call_command(
        "register_model",
        "--name=tiny",
        f"--path={lm_path}",
        '--defaults={"max_new_tokens": 12}',
        "--activate",
        stdout=StringIO(),
    )
    out = StringIO()
    call_command("seed_demo", "--force", stdout=out)  # --force: the test settings' DEBUG is off
    printed = out.getvalue()
    passwords = dict(re.findall(r"^\s+(alice|bob|rita|adam)\s+(\S+)\s+\w+$", printed, re.M))
    assert set(passwords) == {"alice", "bob", "rita", "adam"}, printed
    assert DatasetSnapshot.objects.filter(name=DEMO_SNAPSHOT).exists(), printed
    assert Campaign.objects.get(name=DEMO_CAMPAIGN).lm_version.name == "tiny", printed
    yield passwords
    runtime.unload_all()


@pytest.fixture
def worker(make_run_database, celery_worker_process):
    """The worker starts after the seeding: its fixture purges the queue, so the HHH evals
    that activating the tiny LM queued do not hold up training and generation (one worker
    process does all three here)."""
    return celery_worker_process


# --- Helpers --------------------------------------------------------------------------------


def shot(page, artifacts_dir, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"first-hour-{name}.png"), full_page=True)


def sign_out(page) -> None:
    with page.expect_navigation():
        page.click("button:has-text('Sign out')")


def hh_file(path, lines: int = 20):
    """The first lines of the HH-RLHF file the repository ships, as a plain .jsonl upload."""
    with gzip.open(DEMO_DATASET, "rt") as source:
        path.write_text("".join(islice(source, lines)))
    return path


# --- 1. The admin --------------------------------------------------------------------------


def admin_creates_a_campaign(page, base, artifacts_dir) -> Campaign:
    page.click("nav >> text=Campaigns")
    page.click("text=New campaign")
    page.fill("#id_name", CAMPAIGN)
    page.fill("#id_instructions", "Ask for help planning a **trip**; judge which answer helps.")
    assert page.locator("#id_lm_version option:checked").inner_text().startswith("tiny (")
    # An explicit "no prompt": the latest HHH prompt (preselected) is longer than the tiny
    # LM's 512-token context, so this campaign runs unprompted.
    assert page.locator("#id_prompt option:checked").inner_text().startswith("hhh@")
    page.select_option("#id_prompt", "")
    page.check("#id_no_prompt")
    assert page.input_value("#id_k") == "2"
    page.click("#campaign-form button[type=submit]")
    assert page.inner_text("#campaign-status") == "active"
    shot(page, artifacts_dir, "admin-campaign")
    campaign = Campaign.objects.get(name=CAMPAIGN)
    assert campaign.prompt is None and campaign.lm_version.name == "tiny"
    assert (campaign.k, campaign.judgement_type) == (2, "pairwise")
    return campaign


def admin_launches_a_pm_run(page, base, artifacts_dir) -> TrainingRun:
    page.click("nav >> text=Training")
    page.select_option("#id_kind", "pm")
    demo = DatasetSnapshot.objects.get(name=DEMO_SNAPSHOT)
    assert DEMO_SNAPSHOT in page.locator(f"#id_snapshot option[value='{demo.pk}']").inner_text()
    page.select_option("#id_snapshot", str(demo.pk))
    tiny = ModelVersion.objects.get(kind="lm", name="tiny")
    assert "tiny (#" in page.locator(f"#id_base_model option[value='{tiny.pk}']").inner_text()
    page.select_option("#id_base_model", str(tiny.pk))
    for name, value in {"max_steps": "2", "batch_size": "2", "max_length": "64"}.items():
        page.fill(f"#id_{name}", value)
    for name in ("eval_every", "checkpoint_every"):
        assert page.locator(f"#id_{name}").get_attribute("placeholder")  # defaults shown
    page.select_option("#id_bf16", "off")
    with page.expect_navigation():
        page.click("#launch button[type=submit]")
    run = TrainingRun.objects.get()
    assert page.url == base + reverse("training:run", args=[run.pk])
    assert f"Run #{run.pk}: " in page.inner_text("h1")
    assert (run.kind, run.snapshot, run.base_model.name) == ("pm", demo, "tiny")
    assert run.config["max_steps"] == 2 and run.config["bf16"] is False
    # The worker trains it; the page polls (htmx) until the run has ended.
    status = page.locator(f"#run-{run.pk} strong[class^=status-]")
    wait_until(lambda: status.inner_text() in {"succeeded", "failed"}, 120, "the PM run to end")
    run.refresh_from_db()
    shot(page, artifacts_dir, "admin-run")
    card = page.inner_text(f"#run-{run.pk}")
    if run.status != "succeeded":
        pytest.fail(f"the PM run failed; its page says: {card}")
    assert "Training curves" in card and "Metrics" in card and "2 / 2 steps" in card
    assert page.locator(f"#run-{run.pk} svg").count() >= 1
    assert "Promotion:" in card and run.promotion["reason"][:40].lower() in card.lower()
    assert re.search(r"\d\.\d\de-\d\d", card)  # the learning rate in scientific notation
    assert run.result_version is not None and run.result_version.name in card
    return run


# --- 2. The contractor ---------------------------------------------------------------------


def say(page, text: str) -> None:
    page.fill("textarea[name=text]", text)
    with page.expect_navigation():
        page.click("form.message-form button[type=submit]")
    page.locator("form[data-judge]").wait_for(timeout=60_000)  # htmx swaps it in when ready


def judge(page, point: str) -> None:
    page.check(f"input[name=scale][value='{point}']")
    with page.expect_navigation():
        page.click("form[data-judge] button[type=submit]")


def contractor_chats_and_ties(page, base, campaign, artifacts_dir) -> Conversation:
    page.wait_for_url(base + "/collect/")
    assert DEMO_CAMPAIGN in page.inner_text("main")  # seed_demo's campaign, and adam's:
    card = page.locator(f"#campaign-{campaign.pk}")
    assert CAMPAIGN in card.inner_text() and "trip" in card.inner_text()
    with page.expect_navigation():
        card.locator("button").click()
    conversation = Conversation.objects.get(campaign=campaign)
    assert page.url == f"{base}/collect/conversations/{conversation.pk}/"

    say(page, ALICE_SAYS[0])
    assert page.locator("form[data-judge] .response").count() == 2
    tie_point = page.locator("label.scale-point.tie")
    assert "About the same" in tie_point.inner_text()
    tie_point.click()  # the point between 4 and 5
    assert page.locator("input[name=scale][value=tie]").is_checked()
    shot(page, artifacts_dir, "contractor-tie")
    judge(page, "tie")
    say(page, ALICE_SAYS[1])
    judge(page, "2")  # A better
    shot(page, artifacts_dir, "contractor-conversation")
    assert ALICE_SAYS[1] in page.locator(".dialogue").inner_text()

    tie, picked = Judgement.objects.filter(turn__conversation=conversation).order_by("turn__index")
    assert (tie.tie, tie.scale, tie.contractor.username) == (True, None, "alice")
    assert (picked.tie, picked.scale) == (False, 2)
    return conversation


# --- 3. The researcher ---------------------------------------------------------------------


def researcher_uploads(page, tmp_path, artifacts_dir) -> DatasetImport:
    page.click("nav >> text=Datasets")
    page.select_option("#upload-form #id_format", "hh-rlhf")
    page.set_input_files("#id_file", str(hh_file(tmp_path / "harmless-20.jsonl")))
    with page.expect_navigation():
        page.click("#upload-form button[type=submit]")
    page.locator("#job-result").wait_for(timeout=60_000)  # htmx polls until it is done
    job = ImportJob.objects.get()
    assert job.status == "succeeded", job.error
    assert "20 judgements from 20 lines" in page.inner_text("#import-job")
    shot(page, artifacts_dir, "researcher-import")
    return job.dataset_import


def researcher_snapshots_and_exports(page, upload, artifacts_dir) -> None:
    page.click("text=datasets page")
    page.fill("#snapshot-form #id_name", "alice and the upload")
    page.check("#snapshot-form input[name=sources][value=collected]")
    page.check("#snapshot-form input[name=sources][value=imported]")
    page.select_option("#id_imports", str(upload.pk))
    page.select_option("#id_exclude_eval_prompts", "hhh")
    with page.expect_navigation():
        page.click("#snapshot-form button[type=submit]")
    snapshot = DatasetSnapshot.objects.get(name="alice and the upload")
    assert snapshot.filter["imports"] == [upload.pk]
    assert set(snapshot.filter["sources"]) == {"collected", "imported"}
    assert snapshot.counts["judgements"] == 22  # alice's two and the file's twenty
    row = page.locator(f"#snapshot-{snapshot.pk}")
    assert "alice and the upload" in row.inner_text()
    shot(page, artifacts_dir, "researcher-snapshot")
    with page.expect_download() as download:
        row.locator("a[href*='export=trl&file_format=jsonl']").click()
    with open(download.value.path()) as exported:
        rows = [json.loads(line) for line in exported]
    # One TRL row per judgement; alice's tie is marked so TRL users can filter it out.
    assert len(rows) == 22, rows[:2]
    assert sum(bool(r.get("tie")) for r in rows) == 1
    assert all(r["chosen"] and r["rejected"] for r in rows)
    assert any(ALICE_SAYS[0] in json.dumps(r) for r in rows)


def researcher_finds_the_conversation(page, conversation, artifacts_dir) -> None:
    page.click("nav >> text=Conversations")
    page.fill("#id_q", "sourdough")
    with page.expect_navigation():
        page.click("#browse-filters button[type=submit]")
    assert page.locator("#conversations tbody tr").count() == 1
    found = page.locator(f"#conversation-{conversation.pk}")
    assert "alice" in found.inner_text() and ALICE_SAYS[0] in found.inner_text()
    shot(page, artifacts_dir, "researcher-search")
    with page.expect_navigation():
        found.locator("a").first.click()
    main = page.inner_text("main")
    assert ALICE_SAYS[0] in main and ALICE_SAYS[1] in main and "by alice" in main
    assert "A = B (about the same)" in main and "A > B" in main
    shot(page, artifacts_dir, "researcher-conversation")


# --- The hour -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_each_role_does_its_first_hour_in_alignlab_s_pages(
    make_run_database, worker, live_server, tmp_path, artifacts_dir
):
    passwords, base = make_run_database, live_server.url
    requested = []
    with chromium_page(viewport={"width": 1200, "height": 900}) as page:
        page.on("request", lambda request: requested.append(request.url))

        sign_in(page, base, "adam", passwords["adam"])
        campaign = admin_creates_a_campaign(page, base, artifacts_dir)
        admin_launches_a_pm_run(page, base, artifacts_dir)
        sign_out(page)

        sign_in(page, base, "alice", passwords["alice"])
        conversation = contractor_chats_and_ties(page, base, campaign, artifacts_dir)
        sign_out(page)

        sign_in(page, base, "rita", passwords["rita"])
        upload = researcher_uploads(page, tmp_path, artifacts_dir)
        researcher_snapshots_and_exports(page, upload, artifacts_dir)
        researcher_finds_the_conversation(page, conversation, artifacts_dir)

    assert requested and all(url.startswith(base) for url in requested)
    assert not [url for url in requested if "/admin/" in url]
