"""Issue 14: the preference model inside collection — best-of-n turns, the PM's blind scores,
the agreement of every judgement with the PM, the drift alarm, review by PM uncertainty."""

import time

import pytest
from django.urls import reverse

from assistant import runtime
from assistant.services import model_version_activate, model_version_register
from collection import pm_loop
from collection.campaigns import campaign_save
from collection.conversations import conversation_start, turn_submit
from collection.generation import conversation_messages, turn_generate
from collection.judgements import judgement_submit
from collection.models import (
    Campaign,
    Candidate,
    LoopSettings,
    PMAgreement,
    Response,
    SelectionRule,
    Turn,
)
from evals import pm_agreement

# --- selection rules: pure functions -------------------------------------------------------

SCORES = [0.1, 0.9, -0.5, 0.4, 0.7, -0.2, 0.0, 0.3]  # ranks: 1→B(0.9), 2→E(0.7), ...


def test_top_k_shows_the_best_k_in_a_shuffled_order():
    shown = pm_loop.choose_shown(SCORES, 2, SelectionRule.TOP_K, seed=1)
    assert sorted(shown) == [1, 4]
    orders = {
        tuple(pm_loop.choose_shown(SCORES, 2, SelectionRule.TOP_K, seed=s)) for s in range(20)
    }
    assert orders == {(1, 4), (4, 1)}  # the PM's pick is not always A


def test_top_vs_bottom_and_spread_and_top_vs_random():
    assert sorted(pm_loop.choose_shown(SCORES, 2, SelectionRule.TOP_VS_BOTTOM, seed=0)) == [1, 2]
    # k = 3: the best, the second best, the worst.
    assert sorted(pm_loop.choose_shown(SCORES, 3, SelectionRule.TOP_VS_BOTTOM, seed=0)) == [1, 2, 4]
    # spread over 8 ranks with k = 3: ranks 1, 5 (round(3.5) = 4 → 5th), 8.
    ranked = sorted(range(8), key=lambda i: -SCORES[i])
    assert sorted(pm_loop.choose_shown(SCORES, 3, SelectionRule.SPREAD, seed=0)) == sorted(
        [ranked[0], ranked[4], ranked[7]]
    )
    others = set()
    for seed in range(30):
        shown = pm_loop.choose_shown(SCORES, 2, SelectionRule.TOP_VS_RANDOM, seed=seed)
        assert 1 in shown
        others |= set(shown) - {1}
    assert len(others) >= 4  # the other one is drawn from the rest
    with pytest.raises(ValueError, match="cannot show 3 of 2"):
        pm_loop.choose_shown([0.0, 1.0], 3, SelectionRule.TOP_K, seed=0)
    with pytest.raises(ValueError, match="unknown selection rule"):
        pm_loop.choose_shown(SCORES, 2, "best", seed=0)


def test_ranks_gaps_and_wilson():
    assert pm_loop.ranks_of([0.2, 0.9, -1.0]) == [2, 1, 3]
    assert pm_loop.smallest_gap([0.0, 0.5, 0.45]) == pytest.approx(0.05)
    assert pm_loop.smallest_gap([1.0]) is None
    low, high = pm_loop.wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert pm_loop.wilson(0, 0) == (0.0, 1.0)


# --- generation and judgement: the real tiny LM and PM, in this process --------------------


def generated_turn(campaign, contractor, text="Hello, can you help me?") -> Turn:
    conversation = conversation_start(campaign=campaign, contractor=contractor)
    turn = turn_submit(conversation=conversation, contractor=contractor, text=text)
    return turn_generate(turn_id=turn.pk)


@pytest.mark.django_db
def test_a_best_of_4_turn_shows_the_pms_best_2_and_keeps_the_other_2(
    alice, make_campaign, active_pm
):
    campaign = make_campaign(best_of_n=4, selection_rule=SelectionRule.TOP_K)
    turn = generated_turn(campaign, alice)
    assert turn.status == Turn.Status.READY, turn.error
    shown = list(turn.responses.order_by("index"))
    kept = list(Candidate.objects.filter(turn=turn))
    assert len(shown) == 2 and len(kept) == 2
    for row in shown + kept:
        assert row.pm_version_id == active_pm.pk and row.pm_score is not None
        assert row.selection_rule == "top_k"
    assert sorted(r.pm_rank for r in shown) == [1, 2]
    assert sorted(c.pm_rank for c in kept) == [3, 4]
    assert min(r.pm_score for r in shown) >= max(c.pm_score for c in kept)
    assert all(r.candidates_n == 4 for r in shown)
    assert turn.pm_uncertainty == pytest.approx(abs(shown[0].pm_score - shown[1].pm_score))
    # The scores are the PM's own: scoring the shown texts again gives the same numbers.
    again = pm_loop.score_turn_candidates(
        active_pm, conversation_messages(turn), [r.text for r in shown]
    )
    assert again == pytest.approx([r.pm_score for r in shown], abs=1e-4)

    # The contractor prefers the PM's second pick: the agreement row says "disagrees".
    second = next(r for r in shown if r.pm_rank == 2)
    scale = 1 if second.index == 0 else 8  # 1: A much better; 8: B much better
    judgement = judgement_submit(turn=turn, contractor=alice, scale=scale)
    agreement = PMAgreement.objects.get(judgement=judgement)
    assert agreement.agrees is False and agreement.pm_version_id == active_pm.pk
    assert agreement.chosen_response_id == second.pk
    assert agreement.predicted_response_id == next(r.pk for r in shown if r.pm_rank == 1)
    assert agreement.margin == pytest.approx(turn.pm_uncertainty)
    # A repeated submit records nothing twice.
    judgement_submit(turn=turn, contractor=alice, scale=scale)
    assert PMAgreement.objects.count() == 1


@pytest.mark.django_db
def test_plain_turns_are_scored_blind_when_a_pm_is_active_and_not_without_one(
    alice, make_campaign, tiny_pm_path
):
    campaign = make_campaign()
    turn = generated_turn(campaign, alice)
    assert turn.status == Turn.Status.READY
    assert all(r.pm_score is None for r in turn.responses.all())  # no PM: nothing scored
    judgement = judgement_submit(turn=turn, contractor=alice, scale=2)
    assert not PMAgreement.objects.filter(judgement=judgement).exists()

    pm = model_version_register(kind="pm", name="tiny pm", path=str(tiny_pm_path))
    model_version_activate(version=pm)
    turn = turn_generate(
        turn_id=turn_submit(
            conversation=turn.conversation, contractor=alice, text="And another thing?"
        ).pk
    )
    shown = list(turn.responses.all())
    assert [r.pm_version_id for r in shown] == [pm.pk, pm.pk]
    assert sorted(r.pm_rank for r in shown) == [1, 2] and not turn.candidates.exists()
    best = next(r for r in shown if r.pm_rank == 1)
    judgement = judgement_submit(turn=turn, contractor=alice, scale=2 if best.index == 0 else 7)
    assert PMAgreement.objects.get(judgement=judgement).agrees is True
    runtime.unload_all()


@pytest.mark.django_db
def test_best_of_n_without_a_pm_fails_the_turn_with_the_reason(alice, make_campaign):
    campaign = make_campaign(best_of_n=4)
    turn = generated_turn(campaign, alice)
    assert turn.status == Turn.Status.FAILED
    assert "needs a preference model" in turn.error
    assert not Response.objects.filter(turn=turn).exists()


@pytest.mark.django_db
def test_best_of_n_is_validated(make_campaign):
    from django.core.exceptions import ValidationError

    campaign = make_campaign(k=3, judgement_type="ranking")
    for value, message in [(2, r"between k \(3\) and 32"), (33, r"between k \(3\) and 32")]:
        campaign.best_of_n = value
        with pytest.raises(ValidationError, match=message):
            campaign_save(campaign=campaign)
    campaign.best_of_n, campaign.sampling_variants = 4, [{"name": "hot", "temperature": 1.2}]
    with pytest.raises(ValidationError, match="one condition"):
        campaign_save(campaign=campaign)


@pytest.mark.django_db
def test_review_by_pm_uncertainty_takes_the_closest_call_first(
    alice, bob, django_user_model, make_campaign
):
    from collection import selectors
    from collection.selectors import review_next

    campaign = make_campaign(overlap_target=2, review_order="pm_uncertainty")
    turns = []
    for gap in (0.8, 0.05, None, 0.3):
        conversation = conversation_start(campaign=campaign, contractor=alice)
        turn = Turn.objects.create(
            conversation=conversation,
            index=0,
            human_text="hi",
            status=Turn.Status.JUDGED,
            needs_review=True,
            judgement_count=1,
            pm_uncertainty=gap,
        )
        turns.append(turn)
    order = []
    for _ in range(4):
        turn = review_next(contractor=bob)
        order.append(turn.pm_uncertainty)
        Turn.objects.filter(pk=turn.pk).update(needs_review=False)
    assert order == [0.05, 0.3, 0.8, None]  # unscored turns after the scored ones
    # Without active selection the same campaign reviews oldest first.
    Turn.objects.filter(pk__in=[t.pk for t in turns]).update(needs_review=True)
    campaign.review_order = "oldest"  # as an admin edits it: seen at once
    campaign.save(update_fields=["review_order"])
    assert review_next(contractor=bob).pk == turns[0].pk
    # An UPDATE behind the ORM's back shows once the process's list has run out (settings).
    Campaign.objects.filter(pk=campaign.pk).update(review_order="pm_uncertainty")
    assert review_next(contractor=bob).pk == turns[0].pk  # the list kept for a few seconds
    selectors._uncertainty["until"] = 0.0  # ... as after COLLECTION_QUEUE_CAMPAIGNS_S
    assert review_next(contractor=bob).pm_uncertainty == 0.05


@pytest.mark.django_db
def test_the_drift_alarm_fires_when_recent_agreement_falls_below_held_out(
    alice, make_campaign, active_pm, rita, adam, client
):
    from evals.models import EvalRun

    EvalRun.objects.create(
        suite=EvalRun.Suite.HELD_OUT,
        model_version=active_pm,
        status=EvalRun.Status.SUCCEEDED,
        results={"accuracy": {"accuracy": 0.8, "n": 400}},
    )
    loop = LoopSettings.current()
    loop.drift_window, loop.drift_margin = 6, 0.1
    loop.save()
    campaign = make_campaign(max_turns=8)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turn = None
    agrees_in_order = [True, True, False, False, True, False]  # 3 of 6 = 0.5 < 0.8 - 0.1
    for i, agrees in enumerate(agrees_in_order):
        turn = turn_generate(
            turn_id=turn_submit(conversation=conversation, contractor=alice, text=f"message {i}").pk
        )
        best = next(r for r in turn.responses.all() if r.pm_rank == 1)
        pick = best.index if agrees else 1 - best.index
        judgement_submit(turn=turn, contractor=alice, scale=2 if pick == 0 else 7)
        state = pm_agreement.drift()
        assert state.alarm is (i == 5), (i, state)  # only once the window is full
    assert state.rate == 0.5 and state.held_out_accuracy == 0.8
    client.force_login(rita)
    page = client.get(reverse("evals:pm_agreement")).content.decode()
    assert "Drift alarm" in page and "agrees with 3 of the last 6" in page
    client.force_login(adam)  # the admin's landing page shows it too
    landing = client.get(reverse("training:runs")).content.decode()
    assert "PM drift alarm" in landing and "3 of the last 6 judgements" in landing


@pytest.mark.django_db
def test_agreement_page_and_api_are_for_researchers_only(alice, rita, client):
    from rest_framework.test import APIClient

    client.force_login(alice)
    assert client.get(reverse("evals:pm_agreement")).status_code == 403
    api = APIClient()
    api.force_authenticate(alice)
    assert api.get("/api/pm-agreement/").status_code == 403
    api.force_authenticate(rita)
    body = api.get("/api/pm-agreement/").json()
    assert body == {
        "groups": {"pm_version": [], "campaign": [], "mode": [], "contractor": []},
        "drift": None,
    }
    assert api.get("/api/pm-agreement/", {"campaign": "abc"}).status_code == 400
    unknown = api.get("/api/pm-agreement/", {"campaign": 999_999})  # an id, like other filters
    assert unknown.status_code == 200 and unknown.json()["groups"]["campaign"] == []
    schema = api.get("/api/schema/", {"format": "json"}).json()
    answer = schema["paths"]["/api/pm-agreement/"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/AgreementReport")
    assert api.get("/api/pm-agreement/", {"x": "1"}).status_code == 400


# --- must-show 1: the real stack --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_best_of_n_turn_through_a_real_worker_is_judged_and_tested_against_the_pm(
    alice, rita, client, make_campaign, active_pm, celery_worker_process
):
    """k = 2, n = 4, a tiny PM: the worker samples 4, scores them and shows 2; the contractor's
    judgement is tested against the PM, and the agreement page shows it."""
    campaign = make_campaign(best_of_n=4, selection_rule=SelectionRule.TOP_VS_BOTTOM)
    client.force_login(alice)
    started = client.post(reverse("collection:start", args=[campaign.pk]))
    assert started.status_code == 302
    conversation = campaign.conversations.get(contractor=alice)
    sent = client.post(
        reverse("collection:message", args=[conversation.pk]), {"text": "What is a good book?"}
    )
    assert sent.status_code in (200, 302)
    turn = conversation.turns.get()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        turn.refresh_from_db()
        if turn.status in (Turn.Status.READY, Turn.Status.FAILED):
            break
        time.sleep(0.3)
    assert turn.status == Turn.Status.READY, (turn.error, celery_worker_process.output()[-3000:])
    shown = list(turn.responses.order_by("index"))
    kept = list(turn.candidates.all())
    assert len(shown) == 2 and len(kept) == 2
    assert sorted(r.pm_rank for r in shown) == [1, 4]  # top vs bottom of 4
    assert all(r.pm_score is not None and r.pm_version_id == active_pm.pk for r in shown + kept)
    assert all(r.selection_rule == "top_vs_bottom" for r in shown + kept)

    # Nothing on the contractor's page gives the PM away.
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    for row in shown:
        assert f"{row.pm_score:.3f}" not in page and f"{row.pm_score}" not in page
    assert "pm_rank" not in page and "pm_score" not in page
    for candidate in kept:
        # The tiny random LM may write an empty or a few-character text, which any page holds.
        if len(candidate.text.strip()) >= 8:
            assert candidate.text not in page or candidate.text in {r.text for r in shown}

    best = next(r for r in shown if r.pm_rank == 1)
    judged = client.post(
        reverse("collection:judge", args=[turn.pk]), {"scale": 2 if best.index == 0 else 7}
    )
    assert judged.status_code in (200, 302), judged.content[:500]
    agreement = PMAgreement.objects.get(judgement__turn=turn)
    assert agreement.agrees is True and agreement.contractor_id == alice.pk

    client.force_login(rita)
    report = client.get(reverse("evals:pm_agreement")).content.decode()
    assert "tiny pm" in report and campaign.name in report and "alice" in report
    row = pm_loop.agreement_rows("pm_version")[0]
    assert (row.n, row.agree) == (1, 1)


@pytest.mark.django_db
def test_fresh_agreement_scores_the_latest_judgements_a_pm_did_not_train_on(
    alice, make_campaign, active_pm
):
    from django.utils import timezone

    from assistant import runtime as loaded

    campaign = make_campaign(max_turns=6)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    expected, cut = [], None
    for i, agrees in enumerate([True, False, True, True, False]):
        if i == 2:
            cut = timezone.now()  # "the snapshot": judgements before it were trained on
        turn = turn_generate(
            turn_id=turn_submit(conversation=conversation, contractor=alice, text=f"fresh {i}").pk
        )
        best = next(r for r in turn.responses.all() if r.pm_rank == 1)
        pick = best.index if agrees else 1 - best.index
        judgement_submit(turn=turn, contractor=alice, scale=2 if pick == 0 else 7)
        if i >= 2:
            expected.append(agrees)
    scorer = loaded.pm_scorer(active_pm)
    fresh = pm_loop.fresh_agreement(scorer, since=cut)
    assert (fresh["n"], fresh["agree"]) == (3, sum(expected))
    assert fresh["low"] < fresh["rate"] < fresh["high"]
    assert pm_loop.fresh_agreement(scorer, since=cut, limit=1)["n"] == 1
    everything = pm_loop.fresh_agreement(scorer)
    assert (everything["n"], everything["agree"]) == (5, 3)


@pytest.mark.django_db
def test_the_raw_export_carries_the_pms_blind_view_and_the_unshown_candidates(
    alice, make_campaign, active_pm, tmp_path, settings
):
    import pyarrow.parquet as pq

    from collection.exports import export_rows, export_write
    from collection.snapshots import snapshot_create

    settings.MEDIA_ROOT = tmp_path / "media"
    campaign = make_campaign(best_of_n=4, selection_rule=SelectionRule.TOP_K)
    turn = generated_turn(campaign, alice)
    judgement_submit(turn=turn, contractor=alice, scale=2)
    snapshot = snapshot_create(filter={"campaigns": [campaign.pk]})
    (row,) = [r for r in export_rows(snapshot, "raw") if r["kind"] == "judgement"]
    shown = list(turn.responses.order_by("index"))
    assert row["pm_scores"] == [r.pm_score for r in shown]
    assert sorted(row["pm_ranks"]) == [1, 2]
    kept = row["unshown_candidates"]
    assert [c["pm_rank"] for c in kept] == [3, 4]
    assert {c["text"] for c in kept} == set(turn.candidates.values_list("text", flat=True))
    assert "unshown_candidates" not in next(export_rows(snapshot, "ranked"))  # raw only
    path = tmp_path / "raw.parquet"
    export_write(snapshot=snapshot, fmt="raw", path=path, file_format="parquet")
    table = pq.read_table(path).to_pylist()
    assert [c["pm_rank"] for c in table[0]["unshown_candidates"]] == [3, 4]
