"""Elo of LM versions and sampling conditions from contractor judgements: the selector's games,
the page and the API, on judgements made through the real services."""

import json
import math
import random
from collections import Counter

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from assistant.services import model_version_register
from collection.imports import dataset_import_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, Judgement, Response, Turn
from evals import arm_elo
from evals.suites.elo import elo_ratings

pytestmark = pytest.mark.django_db


@pytest.fixture
def alpha(tmp_path):
    # nothing here runs a model: any existing folder registers
    return model_version_register(kind="lm", name="alpha", path=str(tmp_path))


@pytest.fixture
def beta(tmp_path):
    return model_version_register(kind="lm", name="beta", path=str(tmp_path))


def make_campaign(alpha, beta, **fields):
    """A campaign on alpha that also samples beta."""
    campaign = Campaign.objects.create(
        **{"name": "arms", "lm_version": alpha, "max_turns": 8, "overlap_target": 2, **fields}
    )
    campaign.compare_versions.add(beta)
    return campaign


def ready_turn(conversation, index, arms, judgement_type=""):
    """A turn whose responses come from `arms`, (version or None, condition) by position."""
    turn = Turn.objects.create(
        conversation=conversation,
        index=index,
        human_text=f"question {index}",
        status=Turn.Status.READY,
        judgement_type=judgement_type,
    )
    return turn, Response.objects.bulk_create(
        Response(turn=turn, index=i, text=f"answer {i}", model_version=v, condition=c)
        for i, (v, c) in enumerate(arms)
    )


@pytest.fixture
def judged(alpha, beta, alice, bob):
    """Judgements in a mixed helpful campaign comparing alpha and beta, each plain and "hot",
    and in a red-team campaign comparing alpha and beta. Arms: A = alpha, AH = alpha · hot,
    B = beta, BH = beta · hot; responses in display order, stored better-first order after →:

        t1 pairwise   A B        alice scale 2 (A better)     → A B      game A>B
        t2 ranking    A BH AH    alice ranks BH, AH, A        → BH AH A  BH>AH, BH>A, AH>A
        t3 ranking    B B A      alice ranks B0, A, B1        → B0 A B1  B>A, (B=B: same arm), A>B
        t4 ranking    A ∅ B      alice ranks ∅, A, B          → ∅ A B    (∅: no version ×2), A>B
        red pairwise  A B        alice scale 1 (A MORE harmful) → B A    game B>A
        t1 review     A B        bob scale 7 (B better)       → B A      game B>A
    """
    helpful = make_campaign(
        alpha,
        beta,
        judgement_type=Campaign.JudgementType.MIXED,
        k=3,
        sampling_variants=[{"name": "hot", "temperature": 1.2}],
    )
    red = make_campaign(alpha, beta, name="red", mode=Campaign.Mode.RED_TEAM)
    A, AH, B, BH = (alpha, ""), (alpha, "hot"), (beta, ""), (beta, "hot")
    chat = Conversation.objects.create(campaign=helpful, contractor=alice)
    t1, (a1, b1) = ready_turn(chat, 0, [A, B], judgement_type="pairwise")
    t2, (a2, bh2, ah2) = ready_turn(chat, 1, [A, BH, AH], judgement_type="ranking")
    t3, (b3, b3_, a3) = ready_turn(chat, 2, [B, B, A], judgement_type="ranking")
    t4, (a4, none4, b4) = ready_turn(chat, 3, [A, (None, ""), B], judgement_type="ranking")
    red_chat = Conversation.objects.create(campaign=red, contractor=alice)
    t5, _ = ready_turn(red_chat, 0, [A, B])
    judgement_submit(turn=t1, contractor=alice, scale=2)
    judgement_submit(turn=t2, contractor=alice, ranking=[bh2.pk, ah2.pk, a2.pk])
    judgement_submit(turn=t3, contractor=alice, ranking=[b3.pk, a3.pk, b3_.pk])
    judgement_submit(turn=t4, contractor=alice, ranking=[none4.pk, a4.pk, b4.pk])
    judgement_submit(turn=t5, contractor=alice, scale=1)
    judgement_submit(turn=t1, contractor=bob, scale=7)
    return helpful, red


def arms(alpha, beta):
    return (alpha.pk, ""), (alpha.pk, "hot"), (beta.pk, ""), (beta.pk, "hot")


def games_by_hand(alpha, beta):
    """The games of the `judged` fixture, in the order the judgements were made."""
    A, AH, B, BH = arms(alpha, beta)
    return [
        (A, B),  # t1, alice
        (BH, AH),  # t2
        (BH, A),
        (AH, A),
        (B, A),  # t3: the two B responses play no game
        (A, B),
        (A, B),  # t4: the response of no model version plays none
        (B, A),  # red team: the stored (better = less harmful) order counts
        (B, A),  # t1, bob's review
    ]


def test_judgements_become_games_between_different_arms(judged, alpha, beta):
    A, AH, B, BH = arms(alpha, beta)
    games = arm_elo.arm_games()
    assert games.games == Counter(games_by_hand(alpha, beta))
    assert games.judgements == 6 and games.same_arm_pairs == 1 and games.unversioned_pairs == 2
    assert games.labels == {A: "alpha", AH: "alpha · hot", B: "beta", BH: "beta · hot"}


def test_red_team_judgements_count_the_stored_better_first_order(judged, alpha, beta):
    helpful, red = judged
    A, _, B, _ = arms(alpha, beta)
    judgement = Judgement.objects.get(turn__conversation__campaign=red)
    a, b = judgement.turn.responses.order_by("index")
    # The red teamer picked A as MORE harmful; the stored order puts the less harmful B first.
    assert judgement.submitted_ranking == [a.pk, b.pk] and judgement.ranking == [b.pk, a.pk]
    assert arm_elo.arm_games(mode=Campaign.Mode.RED_TEAM).games == Counter([(B, A)])
    assert arm_elo.arm_games(campaign=red).games == Counter([(B, A)])


def test_filters_by_campaign_mode_and_origin(judged, alpha, beta):
    helpful, red = judged
    A, AH, B, BH = arms(alpha, beta)
    everything = games_by_hand(alpha, beta)
    assert arm_elo.arm_games(campaign=helpful).games == Counter(everything[:7] + everything[8:])
    assert arm_elo.arm_games(mode=Campaign.Mode.HELPFUL).games == Counter(everything[:7] + [(B, A)])
    assert arm_elo.arm_games(origins=[Judgement.Origin.REVIEW]).games == Counter([(B, A)])
    assert arm_elo.arm_games(origins=[Judgement.Origin.CONVERSATION]).games == Counter(
        everything[:8]
    )
    assert arm_elo.arm_games(mode=Campaign.Mode.HONEST).games == Counter([])


def test_imported_judgements_and_responses_play_no_game(judged, tmp_path):
    path = tmp_path / "toy.jsonl"
    with path.open("w") as f:
        for i in range(3):
            prompt = [{"role": "user", "content": f"Say hi ({i})."}]
            good = [{"role": "assistant", "content": "Hi! Glad to help."}]
            bad = [{"role": "assistant", "content": "No."}]
            f.write(json.dumps({"prompt": prompt, "chosen": good, "rejected": bad}) + "\n")
    imported = dataset_import_create(path=path, format="trl")
    mine = Judgement.objects.filter(turn__conversation__dataset_import=imported)
    assert mine.count() == 3 and {j.origin for j in mine} == {Judgement.Origin.IMPORTED}
    assert not Response.objects.filter(
        turn__conversation__dataset_import=imported, model_version__isnull=False
    ).exists()
    games = arm_elo.arm_games()
    assert games.judgements == 6 and games.games.total() == 9
    # Asked for by origin, they are still not read: only collected conversations compare arms.
    assert arm_elo.arm_games(origins=[Judgement.Origin.IMPORTED]).judgements == 0


def test_games_are_read_in_two_queries(judged, django_assert_num_queries):
    with django_assert_num_queries(2):
        games = arm_elo.arm_games()
    assert games.games.total() == 9


def test_versions_of_one_name_are_told_apart(alpha, alice, tmp_path):
    twin = model_version_register(kind="lm", name="alpha", path=str(tmp_path))
    campaign = make_campaign(alpha, twin)
    turn, (a, b) = ready_turn(
        Conversation.objects.create(campaign=campaign, contractor=alice),
        0,
        [(alpha, ""), (twin, "")],
    )
    judgement_submit(turn=turn, contractor=alice, scale=8)
    games = arm_elo.arm_games()
    assert games.games == Counter([((twin.pk, ""), (alpha.pk, ""))])
    assert games.labels == {
        (alpha.pk, ""): f"alpha #{alpha.pk}",
        (twin.pk, ""): f"alpha #{twin.pk}",
    }


def expected_ratings(alpha, beta, outcomes):
    labels = dict(
        zip(arms(alpha, beta), ["alpha", "alpha · hot", "beta", "beta · hot"], strict=True)
    )
    fitted = elo_ratings(sorted(outcomes), resamples=100, seed=0)  # the report's arm order
    return {labels[arm]: rating for arm, rating in fitted["ratings"].items()}


def test_the_page_shows_the_arms_best_first_with_a_chart(client, rita, judged, alpha, beta):
    client.force_login(rita)
    leaderboard = client.get(reverse("evals:leaderboard")).content.decode()
    assert f'href="{reverse("evals:elo")}"' in leaderboard
    page = client.get(reverse("evals:elo")).content.decode()
    expected = expected_ratings(alpha, beta, games_by_hand(alpha, beta))
    assert len(expected) == 4
    table = page[page.index("<table") :]
    positions = [table.index(f"<tr><td>{label}</td>") for label in expected]
    assert positions == sorted(positions)
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page and 'aria-label="Elo of arms"' in page
    assert page.count("<circle") == 4
    assert "9 games from 6 judgements" in page and "counts as one game" in page
    first, rating = next(iter(expected.items()))
    assert f"<tr><td>{first}</td><td>{rating['elo']:.0f}</td>" in page
    assert f"{rating['low']:.0f} – {rating['high']:.0f}" in page
    # The red-team judgement alone: beta's (less harmful) response won it, so beta leads.
    page = client.get(reverse("evals:elo"), {"mode": "red_team"}).content.decode()
    assert page.index("<tr><td>beta</td>") < page.index("<tr><td>alpha</td>")
    assert "1 game from 1 judgement" in page and "alpha · hot" not in page


def test_the_page_says_what_data_it_needs(client, rita, adam):
    for user in (rita, adam):
        client.force_login(user)
        page = client.get(reverse("evals:elo")).content.decode()
        assert "two or more LM versions" in page and "<svg" not in page
    bad = client.get(reverse("evals:elo"), {"campaign": 999, "mode": "evil"})
    assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()


def test_contractors_and_strangers_are_kept_out(client, alice):
    url = reverse("evals:elo")
    assert client.get(url)["Location"].startswith("/accounts/login/")
    client.force_login(alice)
    assert client.get(url).status_code == 403
    api = APIClient()
    assert api.get("/api/elo/").status_code in (401, 403)
    api.force_authenticate(alice)
    assert api.get("/api/elo/").status_code == 403


def test_the_api_returns_the_same_ratings(rita, judged, alpha, beta):
    api = APIClient()
    api.force_authenticate(rita)
    answer = api.get("/api/elo/")
    assert answer.status_code == 200
    body = answer.json()
    expected = expected_ratings(alpha, beta, games_by_hand(alpha, beta))
    assert list(body["ratings"]) == list(expected)
    for label, rating in expected.items():
        for key in ("elo", "low", "high", "wins", "losses", "games"):
            assert body["ratings"][label][key] == pytest.approx(rating[key]), (label, key)
    assert body["ratings"]["alpha · hot"]["model_version"] == alpha.pk
    assert body["ratings"]["alpha · hot"]["condition"] == "hot"
    assert body["n_games"] == 9 and body["judgements"] == 6 and body["resamples"] == 100
    assert body["ignored_pairs"] == {"same_arm": 1, "unversioned": 2}
    red = api.get("/api/elo/", {"mode": "red_team"}).json()
    assert list(red["ratings"]) == ["beta", "alpha"] and red["n_games"] == 1
    review = api.get("/api/elo/", {"origin": "review", "campaign": judged[0].pk}).json()
    assert review["n_games"] == 1 and review["ratings"]["beta"]["wins"] == 1
    unknown = api.get("/api/elo/", {"campain": 1})
    assert unknown.status_code == 400 and "unknown filter(s): campain" in str(unknown.json())
    assert api.get("/api/elo/", {"origin": "imported"}).status_code == 400


def test_a_75_percent_preference_is_a_191_point_lead(alpha, beta, alice):
    """Many pairwise judgements where alpha's response wins 3 in 4: the Elo gap is about
    400·log10(3) ≈ 191 and inside its bootstrap interval."""
    campaign = make_campaign(alpha, beta)
    chat = Conversation.objects.create(campaign=campaign, contractor=alice)
    n, rng = 400, random.Random(3)
    turns = Turn.objects.bulk_create(
        Turn(conversation=chat, index=i, human_text=f"q{i}", status=Turn.Status.JUDGED)
        for i in range(n)
    )
    alpha_first = [rng.random() < 0.5 for _ in turns]  # display position of alpha's response
    responses = Response.objects.bulk_create(
        Response(turn=turn, index=i, text="…", model_version=version)
        for turn, first in zip(turns, alpha_first, strict=True)
        for i, version in enumerate([alpha, beta] if first else [beta, alpha])
    )
    alpha_wins = [rng.random() < 0.75 for _ in turns]
    judgements = []
    for t, turn in enumerate(turns):
        shown = responses[2 * t : 2 * t + 2]
        a, b = shown if alpha_first[t] else shown[::-1]
        order = [a.pk, b.pk] if alpha_wins[t] else [b.pk, a.pk]
        judgements.append(
            Judgement(
                turn=turn,
                contractor=alice,
                origin=Judgement.Origin.CONVERSATION,
                ranking=order,
                submitted_ranking=order,
            )
        )
    Judgement.objects.bulk_create(judgements)
    report = arm_elo.elo_report()
    a, b = report["ratings"]["alpha"], report["ratings"]["beta"]
    assert list(report["ratings"]) == ["alpha", "beta"] and report["n_games"] == n
    assert a["wins"] == sum(alpha_wins) and b["wins"] == n - sum(alpha_wins)
    gap = a["elo"] - b["elo"]
    truth = 400 * math.log10(3)
    # Two arms sit symmetrically about the mean, 1000: alpha's interval gives the gap's.
    low, high = 2 * (a["low"] - 1000), 2 * (a["high"] - 1000)
    assert low < gap < high and low < truth < high, (gap, low, high)
    assert abs(gap - truth) < 60 and high - low < 250
    # The fit is the observed win ratio's, up to the small prior.
    observed = 400 * math.log10(sum(alpha_wins) / (n - sum(alpha_wins)))
    assert gap == pytest.approx(observed, abs=2)


# --- beyond EVALS_ELO_LIVE_MAX_JUDGEMENTS: the periodic task's game counts -------------------


FILTERS = [
    {},
    {"mode": Campaign.Mode.RED_TEAM},
    {"mode": Campaign.Mode.HELPFUL},
    {"mode": Campaign.Mode.HONEST},
    {"origins": [Judgement.Origin.REVIEW]},
    {"origins": [Judgement.Origin.CONVERSATION], "mode": Campaign.Mode.HELPFUL},
]


def test_past_the_live_limit_the_report_adds_up_the_stored_counts_with_the_same_numbers(
    judged, alpha, beta, settings, alice, client, rita
):
    from evals.models import EloSummary
    from evals.tasks import refresh_elo

    helpful, red = judged
    filters = [*FILTERS, {"campaign": helpful}, {"campaign": red.pk, "mode": "helpful"}]
    live = [arm_elo.elo_report(**f, resamples=10) for f in filters]  # few: the same either way
    assert all(report["summary"] is None for report in live)
    settings.EVALS_ELO_LIVE_MAX_JUDGEMENTS = 5  # there are 6 (and 0 imported)
    pending = arm_elo.elo_report()
    assert pending["summary"] == {"pending": True} and pending["ratings"] == {}
    client.force_login(rita)
    page = client.get(reverse("evals:elo")).content.decode()
    assert "which has not run yet" in page and "No games between arms" not in page

    assert refresh_elo() == {"cells": 3, "seconds": pytest.approx(0, abs=5)}
    for f, expected in zip(filters, live, strict=True):
        stored = arm_elo.elo_report(**f, resamples=10)
        assert stored.pop("summary")["newer"] == 0
        expected = {k: v for k, v in expected.items() if k != "summary"}
        assert stored == expected, f
    page = client.get(reverse("evals:elo")).content.decode()
    assert "As of" in page and "9 games from 6 judgements" in page and "since" not in page

    # A new judgement is counted at the task's next run; the page says how many are waiting.
    chat = Conversation.objects.create(campaign=red, contractor=alice)
    turn, _ = ready_turn(chat, 0, [(alpha, ""), (beta, "")])
    judgement_submit(turn=turn, contractor=alice, scale=1)
    page = client.get(reverse("evals:elo")).content.decode()
    assert "1 judgement since, counted at its next run" in page and "9 games" in page
    api = APIClient()
    api.force_authenticate(rita)
    body = api.get("/api/elo/").json()
    assert body["n_games"] == 9 and body["summary"]["newer"] == 1
    assert body["summary"]["computed_at"].startswith(str(EloSummary.objects.get().computed_at.year))
    refresh_elo()
    assert arm_elo.elo_report()["n_games"] == 10 and EloSummary.objects.count() == 1


def test_the_elo_refresh_runs_every_5_minutes_from_beat():
    from django_celery_beat.models import PeriodicTask

    from config.celery import app
    from evals.tasks import refresh_elo

    task = PeriodicTask.objects.get(task="evals.refresh_elo")
    assert task.enabled and (task.interval.every, task.interval.period) == (5, "minutes")
    assert task.queue == "default" and task.task == refresh_elo.name in app.tasks
