"""In Chromium, against the live server and a real worker: an admin makes, pauses and closes a
campaign in AlignLab's pages; a researcher uploads an import file, snapshots it with the form,
downloads an export and finds a contractor's conversation by searching. No /admin/ URL."""

import pytest

from assistant.services import model_version_register, prompt_template_create
from collection.campaigns import campaign_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, DatasetSnapshot, ImportJob, Response, Turn
from tests.browser import chromium_page, sign_in
from tests.training.test_runs import toy_trl_file

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_admin_and_researcher_pages_in_a_browser(
    live_server, adam, rita, alice, tmp_path, celery_worker_process, artifacts_dir
):
    lm = model_version_register(kind="lm", name="chat-lm", path=str(tmp_path), activate=True)
    # The latest HHH prompt (a transactional test may find the migration's hhh@1 flushed).
    hhh = prompt_template_create(name="hhh", text="Browser test HHH prompt.")
    visited = []
    with chromium_page() as page:
        page.on("framenavigated", lambda frame: visited.append(frame.url))
        sign_in(page, live_server.url, "adam", "pw-adam")
        page.click("nav >> text=Campaigns")
        page.click("text=New campaign")
        page.fill("#id_name", "Browser campaign")
        page.fill("#id_instructions", "Be **kind**.")
        assert page.input_value("#id_lm_version") == str(lm.pk)  # the active LM
        assert page.locator("#id_prompt option:checked").inner_text() == hhh.key
        page.click("#campaign-form button[type=submit]")
        assert page.inner_text("#campaign-status") == "active"
        page.screenshot(path=str(artifacts_dir / "campaign-detail.png"), full_page=True)
        page.click("#actions >> text=Pause")
        assert page.inner_text("#campaign-status") == "paused"
        page.click("text=Close for good…")
        page.click("text=Close the campaign")
        assert page.inner_text("#campaign-status") == "closed"
        campaign = Campaign.objects.get(name="Browser campaign")
        assert campaign.closed_at is not None and campaign.created_by == adam
        page.click("button:has-text('Sign out')")

        # A conversation alice held, to be found by searching.
        chat = campaign_create(name="Chat", lm_version=lm)
        conversation = Conversation.objects.create(campaign=chat, contractor=alice)
        turn = Turn.objects.create(
            conversation=conversation,
            index=0,
            human_text="How long does sourdough need to rise?",
            status=Turn.Status.READY,
        )
        Response.objects.bulk_create(
            [Response(turn=turn, index=i, text=t, model_version=lm) for i, t in enumerate("AB")]
        )
        judgement_submit(turn=turn, contractor=alice, scale=2)

        sign_in(page, live_server.url, "rita", "pw-rita")
        page.click("nav >> text=Datasets")
        page.select_option("#upload-form #id_format", "trl")
        page.set_input_files("#id_file", str(toy_trl_file(tmp_path / "toy.jsonl", n=8)))
        page.click("#upload-form button[type=submit]")
        page.locator("#job-result").wait_for(timeout=90_000)  # htmx polls until it is done
        job = ImportJob.objects.get()
        assert job.status == "succeeded", job.error
        page.screenshot(path=str(artifacts_dir / "import-done.png"), full_page=True)

        page.click("text=datasets page")
        page.fill("#snapshot-form #id_name", "toy import")
        page.select_option("#id_imports", str(job.dataset_import_id))
        page.click("#snapshot-form button[type=submit]")
        snapshot = DatasetSnapshot.objects.get()
        row = page.locator(f"#snapshot-{snapshot.pk}")
        assert "toy import" in row.inner_text()
        with page.expect_download() as download:
            row.locator("a[href*='export=trl&file_format=jsonl']").click()
        body = open(download.value.path()).read()
        assert len(body.splitlines()) == 8

        page.click("nav >> text=Conversations")
        page.fill("#id_q", "sourdough")
        page.click("#browse-filters button[type=submit]")
        page.click(f"#conversation-{conversation.pk} a >> nth=0")
        assert "How long does sourdough need to rise?" in page.inner_text("main")
        assert "alice" in page.inner_text("main")
        page.screenshot(path=str(artifacts_dir / "conversation-read.png"), full_page=True)
    assert not [url for url in visited if "/admin/" in url]
