"""Quality measures (collection/quality.py) on judgements made through the real services."""

import pytest
from django.contrib.auth.models import Group

from collection import quality
from collection.agreement import krippendorff_alpha
from collection.gold import gold_item_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, Response, Turn
from config.roles import CONTRACTOR

pytestmark = pytest.mark.django_db


@pytest.fixture
def carol(alice, django_user_model):
    """A third contractor (alice's fixture made the role groups)."""
    user = django_user_model.objects.create_user(username="carol", password="pw-carol")
    user.groups.add(Group.objects.get(name=CONTRACTOR))
    return user


def make_campaign(registered_lm, **fields):
    defaults = {
        "name": "c",
        "lm_version": registered_lm,
        "k": 2,
        "max_turns": 1,
        "overlap_target": 3,
    }
    return Campaign.objects.create(**{**defaults, **fields})


def ready_turn(campaign, author, text="Hello?"):
    """A turn with the campaign's k responses, ready for its author to judge."""
    conversation = Conversation.objects.create(campaign=campaign, contractor=author)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text=text, status=Turn.Status.READY
    )
    Response.objects.bulk_create(
        Response(turn=turn, index=i, text=f"answer {i}", model_version=campaign.lm_version)
        for i in range(campaign.k)
    )
    return turn


def judge(turn, who, seconds, **choice):
    return judgement_submit(turn=turn, contractor=who, time_spent_ms=int(seconds * 1000), **choice)


@pytest.fixture
def reviewed_pairs(registered_lm, alice, bob, carol, adam):
    """Four turns by alice, reviewed by bob (all) and carol (first two), plus one gold item.

    Scales (1–4: A better, 5–8: B better), top choice in brackets:
        turn   alice     bob      carol
        t1     1 (A)     2 (A)    1 (A)
        t2     2 (A)     3 (A)    5 (B)
        t3     7 (B)     6 (B)    –
        t4     8 (B)     1 (A)    –
        gold   6 (B) ✓   3 (A) ✗  –       (gold answer: B)
    """
    campaign = make_campaign(registered_lm)
    turns = [ready_turn(campaign, alice, f"question {i}") for i in range(4)]
    for turn, scale, seconds in zip(turns, [1, 2, 7, 8], [10, 20, 30, 40], strict=True):
        judge(turn, alice, seconds, scale=scale)
    for turn, scale, seconds in zip(turns, [2, 3, 6, 1], [1, 3, 2, 4], strict=True):
        judge(turn, bob, seconds, scale=scale)
    judge(turns[0], carol, 0, scale=1)  # no time recorded
    judge(turns[1], carol, 8, scale=5)
    gold = gold_item_create(
        campaign=campaign, admin=adam, human_text="2+2?", responses=["5", "4"], best_index=1
    )
    judge(gold, alice, 5, scale=6)
    judge(gold, bob, 6, scale=3)
    return campaign, turns, gold


def test_contractor_stats_by_hand(reviewed_pairs):
    campaign, _, _ = reviewed_pairs
    stats = {row["username"]: row for row in quality.contractor_stats(campaign=campaign)}
    assert list(stats) == ["alice", "bob", "carol"]
    alice, bob, carol = stats["alice"], stats["bob"], stats["carol"]
    assert (alice["judgements"], bob["judgements"], carol["judgements"]) == (5, 5, 2)
    # alice: median of 5, 10, 20, 30, 40 s; bob: of 1, 2, 3, 4, 6 s; carol: 8 s (0 = not recorded)
    assert (alice["median_time_s"], bob["median_time_s"], carol["median_time_s"]) == (20, 3, 8)
    assert (alice["gold_judged"], alice["gold_correct"], alice["gold_accuracy"]) == (1, 1, 1.0)
    assert (bob["gold_judged"], bob["gold_correct"], bob["gold_accuracy"]) == (1, 0, 0.0)
    assert (carol["gold_judged"], carol["gold_accuracy"]) == (0, None)
    # alice: with bob on t1–t4 (agree on 3) and carol on t1, t2 (agree on t1) → 4 of 6
    # bob: with alice 3 of 4, with carol 1 of 2 → 4 of 6;  carol: t1 with both, t2 with neither
    assert (alice["overlap_pairs"], alice["agreement"]) == (6, pytest.approx(4 / 6))
    assert (bob["overlap_pairs"], bob["agreement"]) == (6, pytest.approx(4 / 6))
    assert (carol["overlap_pairs"], carol["agreement"]) == (4, 0.5)


def test_contractor_stats_is_per_campaign_and_reads_a_fixed_number_of_queries(
    reviewed_pairs, registered_lm, alice, bob, django_assert_num_queries
):
    other = make_campaign(registered_lm, name="other", judgement_type="ranking", k=3)
    turn = ready_turn(other, bob)
    a, b, c = turn.responses.order_by("index")
    judge(turn, bob, 12, ranking=[c.pk, b.pk, a.pk])
    judge(turn, alice, 14, ranking=[c.pk, a.pk, b.pk])  # the same top choice: C

    stats = {row["username"]: row for row in quality.contractor_stats(campaign=other)}
    assert list(stats) == ["alice", "bob"]
    assert stats["bob"]["median_time_s"] == 12 and stats["bob"]["agreement"] == 1.0
    assert stats["bob"]["gold_accuracy"] is None

    with django_assert_num_queries(2):
        everywhere = {row["username"]: row for row in quality.contractor_stats()}
    assert everywhere["alice"]["judgements"] == 6 and everywhere["bob"]["judgements"] == 6


def test_campaign_agreement_by_hand(reviewed_pairs, django_assert_num_queries):
    campaign, _, _ = reviewed_pairs
    with django_assert_num_queries(2):
        result = quality.campaign_agreement(campaign=campaign, min_common_turns=3)
    # the gold item is left out: overlap is t1–t4, with 4 + 4 + 2 judgements by three people
    assert (result["overlapping_turns"], result["overlap_judgements"]) == (4, 10)
    assert result["contractors"] == 3
    # alice vs bob, top choices A A B B / A A B A: p_o = 3/4; alice A 1/2, B 1/2; bob A 3/4,
    # B 1/4 → p_e = 1/2·3/4 + 1/2·1/4 = 1/2; κ = (3/4 − 1/2) / (1 − 1/2) = 1/2.
    # carol shares only 2 turns with each: below min_common_turns.
    [pair] = result["pairs"]
    assert (pair["username_a"], pair["username_b"], pair["common_turns"]) == ("alice", "bob", 4)
    assert pair["observed_agreement"] == 0.75 and pair["kappa"] == pytest.approx(0.5)
    # α on display indices (0 = A) and on the scale, per turn: the units quality must build
    tops = {1: [0, 0, 0], 2: [0, 0, 1], 3: [1, 1], 4: [1, 0]}
    scales = {1: [1, 2, 1], 2: [2, 3, 5], 3: [7, 6], 4: [8, 1]}
    assert result["alpha_top_choice"] == pytest.approx(krippendorff_alpha(tops))
    assert result["alpha_scale"] == pytest.approx(krippendorff_alpha(scales, "ordinal"))

    # carol vs alice on t1, t2: A A / A B → p_o = 1/2, p_e = 1·1/2 + 0·1/2 = 1/2 → κ = 0
    pairs = quality.campaign_agreement(campaign=campaign, min_common_turns=2)["pairs"]
    assert [(p["username_a"], p["username_b"]) for p in pairs] == [
        ("alice", "bob"),
        ("alice", "carol"),
        ("bob", "carol"),
    ]
    assert pairs[1]["kappa"] == pytest.approx(0.0) and pairs[2]["kappa"] == pytest.approx(0.0)


def test_campaign_agreement_alpha_by_hand_for_two_contractors(registered_lm, alice, bob):
    campaign = make_campaign(registered_lm)
    turns = [ready_turn(campaign, alice, f"q{i}") for i in range(4)]
    for turn, mine, theirs in zip(turns, [1, 2, 7, 8], [2, 3, 6, 1], strict=True):
        judge(turn, alice, 1, scale=mine)
        judge(turn, bob, 1, scale=theirs)
    result = quality.campaign_agreement(campaign=campaign, min_common_turns=4)
    # units (A,A) (A,A) (B,B) (B,A): o = [[4,1],[1,2]]; D_o = 2/8, D_e = 2·5·3/(8·7) → α = 8/15
    assert result["alpha_top_choice"] == pytest.approx(8 / 15)
    assert result["pairs"][0]["kappa"] == pytest.approx(0.5)


def test_campaign_agreement_with_a_tie_beside_a_top_choice(registered_lm, alice, bob):
    # "About the same" is its own label beside the display positions 0, 1: alpha must not
    # compare the string with the numbers (it raised TypeError, so the page and the summary
    # task failed for any campaign where one judge said tie and another chose).
    campaign = make_campaign(registered_lm)
    turns = [ready_turn(campaign, alice, f"q{i}") for i in range(3)]
    for turn, mine in zip(turns, [1, 2, 7], strict=True):
        judge(turn, alice, 1, scale=mine)
    judge(turns[0], bob, 1, tie=True)
    judge(turns[1], bob, 1, scale=3)
    judge(turns[2], bob, 1, scale=6)
    result = quality.campaign_agreement(campaign=campaign, min_common_turns=3)
    relabelled = krippendorff_alpha({1: [0, 2], 2: [0, 0], 3: [1, 1]})  # tie as a third label
    assert result["alpha_top_choice"] == pytest.approx(relabelled)
    assert krippendorff_alpha({1: [0, "tie"], 2: [0, 0], 3: [1, 1]}) == pytest.approx(relabelled)


def test_campaign_agreement_without_overlap(registered_lm, alice):
    campaign = make_campaign(registered_lm, judgement_type="ranking", k=3)
    turn = ready_turn(campaign, alice)
    judge(turn, alice, 3, ranking=list(turn.responses.values_list("pk", flat=True)))
    result = quality.campaign_agreement(campaign=campaign)
    assert result["overlapping_turns"] == 0 and result["pairs"] == []
    assert result["alpha_top_choice"] is None and result["alpha_scale"] is None


def test_turn_consensus_of_a_pairwise_turn(reviewed_pairs, django_assert_num_queries):
    _, turns, gold = reviewed_pairs
    a, b = turns[1].responses.order_by("index")
    with django_assert_num_queries(3):
        result = quality.turn_consensus(turn=turns[1])
    # t2: alice A, bob A, carol B → A ahead; one of three pairs agrees
    assert result["ranking"] == [a.pk, b.pk] and result["letters"] == ["A", "B"]
    assert result["judgements"] == 3 and result["agreement"] == pytest.approx(1 / 3)
    assert result["top_votes"] == {a.pk: 2, b.pk: 1}
    assert result["strengths"][a.pk] > 0 > result["strengths"][b.pk]
    assert result["gold_best_response_id"] is None
    gold_result = quality.turn_consensus(turn=gold)
    assert gold_result["gold_best_response_id"] == gold.gold.best_response_id


def test_turn_consensus_of_a_ranking_turn(registered_lm, alice, bob, carol):
    campaign = make_campaign(registered_lm, judgement_type="ranking", k=3)
    turn = ready_turn(campaign, alice)
    a, b, c = turn.responses.order_by("index")
    judge(turn, alice, 5, ranking=[a.pk, b.pk, c.pk])
    judge(turn, bob, 5, ranking=[a.pk, c.pk, b.pk])
    judge(turn, carol, 5, ranking=[b.pk, a.pk, c.pk])
    result = quality.turn_consensus(turn=turn)
    assert result["letters"] == ["A", "B", "C"] and result["agreement"] == pytest.approx(1 / 3)
