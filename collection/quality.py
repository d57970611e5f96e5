"""Read-only quality measures of collected judgements: contractor stats, agreement, consensus.

Each function runs a fixed handful of queries (no per-row queries) and leaves the math to
`collection/agreement.py`. Gold items measure accuracy only: they never enter agreement.
Imported judgements (no contractor) are left out of contractor statistics.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from statistics import median

from . import agreement
from .models import Campaign, GoldAnswer, Judgement, Response, Turn

TIE = "tie"  # the top choice of an "about the same" judgement


def contractor_stats(*, campaign: Campaign | None = None) -> list[dict]:
    """Per contractor who judged (in `campaign`, or everywhere): volume, speed, accuracy, agreement.

    Each dict: contractor_id, username, judgements, median_time_s (over judgements that recorded
    a time; None when none did), gold_judged, gold_correct, gold_accuracy (top choice == the gold
    answer; None when no gold item was judged), overlap_pairs (this contractor's judgements paired
    with other contractors' judgements of the same non-gold turn), agreement (share of those pairs
    with the same top choice; None when there are none). Sorted by username. Two queries.

    A tie ("about the same") has the top choice TIE: never a gold item's best response, and
    in agreement equal only to another tie.
    """
    judgements = Judgement.objects.filter(contractor__isnull=False)
    golds = GoldAnswer.objects.all()
    if campaign is not None:
        judgements = judgements.filter(turn__conversation__campaign=campaign)
        golds = golds.filter(turn__conversation__campaign=campaign)
    rows = list(
        judgements.values_list(
            "turn_id", "contractor_id", "contractor__username", "ranking", "time_spent_ms", "tie"
        )
    )
    gold_best = dict(golds.values_list("turn_id", "best_response_id"))

    stats: dict[int, dict] = {}
    times: dict[int, list[float]] = defaultdict(list)
    tops_by_turn: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for turn_id, contractor_id, username, ranking, time_spent_ms, tie in rows:
        entry = stats.setdefault(
            contractor_id,
            {
                "contractor_id": contractor_id,
                "username": username,
                "judgements": 0,
                "median_time_s": None,
                "gold_judged": 0,
                "gold_correct": 0,
                "gold_accuracy": None,
                "overlap_pairs": 0,
                "agreement": None,
            },
        )
        entry["judgements"] += 1
        if time_spent_ms:
            times[contractor_id].append(time_spent_ms / 1000)
        top = TIE if tie else (ranking[0] if ranking else None)
        if turn_id in gold_best:
            entry["gold_judged"] += 1
            entry["gold_correct"] += int(top == gold_best[turn_id])
        else:
            tops_by_turn[turn_id].append((contractor_id, top))

    agreeing: dict[int, int] = defaultdict(int)
    for judged in tops_by_turn.values():
        for (a, top_a), (b, top_b) in combinations(judged, 2):
            for contractor_id in (a, b):
                stats[contractor_id]["overlap_pairs"] += 1
                agreeing[contractor_id] += int(top_a == top_b)

    for contractor_id, entry in stats.items():
        if times[contractor_id]:
            entry["median_time_s"] = median(times[contractor_id])
        if entry["gold_judged"]:
            entry["gold_accuracy"] = entry["gold_correct"] / entry["gold_judged"]
        if entry["overlap_pairs"]:
            entry["agreement"] = agreeing[contractor_id] / entry["overlap_pairs"]
    return sorted(stats.values(), key=lambda entry: (entry["username"], entry["contractor_id"]))


def contractor_gold_accuracy() -> dict[int, tuple[int, int]]:
    """Per contractor: (correct, answered) on gold items, as the quality page counts them."""
    return {
        row["contractor_id"]: (row["gold_correct"], row["gold_judged"])
        for row in contractor_stats()
        if row["gold_judged"]
    }


def campaign_agreement(*, campaign: Campaign, min_common_turns: int = 5) -> dict:
    """Inter-contractor agreement in a campaign, over its non-gold turns judged by 2+ contractors.

    Labels are the display index (Response.index) of each judgement's top choice; pairwise
    campaigns add the 8-point scale as an ordinal label. Returns a dict: campaign_id,
    judgement_type, overlapping_turns, overlap_judgements, contractors (how many judged an
    overlapping turn), alpha_top_choice (nominal Krippendorff α; None without overlap),
    alpha_scale (ordinal α on the scale; None unless pairwise with overlap), min_common_turns,
    and pairs: one dict per two contractors with at least `min_common_turns` common turns,
    {contractor_a, username_a, contractor_b, username_b, common_turns, observed_agreement,
    kappa} (a has the lower id), sorted by (username_a, username_b). Two queries.
    """
    rows = list(
        Judgement.objects.filter(
            contractor__isnull=False,
            turn__conversation__campaign=campaign,
            turn__gold__isnull=True,
        ).values_list("turn_id", "contractor_id", "contractor__username", "ranking", "scale", "tie")
    )
    display_index = dict(
        Response.objects.filter(
            turn__conversation__campaign=campaign, turn__gold__isnull=True
        ).values_list("id", "index")
    )

    usernames: dict[int, str] = {}
    by_turn: dict[int, dict[int, tuple[int | None, int | None]]] = defaultdict(dict)
    for turn_id, contractor_id, username, ranking, scale, tie in rows:
        usernames[contractor_id] = username
        # A tie is its own label (no top choice); on the scale it has no point (None).
        top = TIE if tie else (display_index.get(ranking[0]) if ranking else None)
        by_turn[turn_id][contractor_id] = (top, scale)
    overlapping = {turn: judged for turn, judged in by_turn.items() if len(judged) >= 2}

    alpha_top = alpha_scale = None
    if overlapping:
        alpha_top = agreement.krippendorff_alpha(
            {turn: [top for top, _ in judged.values()] for turn, judged in overlapping.items()}
        )
        if campaign.judgement_type != Campaign.JudgementType.RANKING:  # its pairwise turns
            scales = {
                turn: [scale for _, scale in judged.values()]
                for turn, judged in overlapping.items()
            }
            if any(sum(s is not None for s in labels) >= 2 for labels in scales.values()):
                alpha_scale = agreement.krippendorff_alpha(scales, level="ordinal")
    return {
        "campaign_id": campaign.pk,
        "judgement_type": campaign.judgement_type,
        "overlapping_turns": len(overlapping),
        "overlap_judgements": sum(len(judged) for judged in overlapping.values()),
        "contractors": len({c for judged in overlapping.values() for c in judged}),
        "alpha_top_choice": alpha_top,
        "alpha_scale": alpha_scale,
        "min_common_turns": min_common_turns,
        "pairs": _contractor_pairs(overlapping, usernames, min_common_turns),
    }


def _contractor_pairs(overlapping: dict, usernames: dict, min_common_turns: int) -> list[dict]:
    """Top-choice agreement of every two contractors with at least `min_common_turns` common
    turns among `overlapping` ({turn: {contractor: (top, scale)}}), by their usernames."""
    common: dict[tuple[int, int], tuple[list, list]] = defaultdict(lambda: ([], []))
    for judged in overlapping.values():
        for a, b in combinations(sorted(judged), 2):
            labels_a, labels_b = common[(a, b)]
            labels_a.append(judged[a][0])
            labels_b.append(judged[b][0])
    pairs = []
    for (a, b), (labels_a, labels_b) in common.items():
        if len(labels_a) < min_common_turns:
            continue
        same = sum(x == y for x, y in zip(labels_a, labels_b, strict=True))
        pairs.append(
            {
                "contractor_a": a,
                "username_a": usernames[a],
                "contractor_b": b,
                "username_b": usernames[b],
                "common_turns": len(labels_a),
                "observed_agreement": same / len(labels_a),
                "kappa": agreement.cohen_kappa(labels_a, labels_b),
            }
        )
    pairs.sort(key=lambda pair: (pair["username_a"], pair["username_b"]))
    return pairs


def turn_consensus(*, turn: Turn) -> dict:
    """The consensus of every judgement of one turn (Bradley–Terry over their preferences).

    Returns a dict: turn_id, judgements (count), ranking (response ids, better first), letters
    (the ranking as display letters, "A"…), strengths (response id → Bradley–Terry log-strength,
    mean 0), top_votes (response id → judgements that put it first), agreement (share of pairs
    of judgements with the same top choice; None below two judgements), gold_best_response_id
    (None unless a gold item). Three queries.
    """
    # Ties state no preference: they are left out of the consensus and its counts.
    rankings = [
        ranking
        for ranking, tie in turn.judgements.values_list("ranking", "tie")
        if ranking and not tie
    ]
    letters = {pk: "ABCDEFGH"[index] for pk, index in turn.responses.values_list("id", "index")}
    gold_best = GoldAnswer.objects.filter(turn=turn).values_list("best_response_id", flat=True)
    ranking = agreement.consensus_ranking(rankings)
    comparisons = [pair for r in rankings for pair in agreement.pairwise_preferences(r)]
    top_votes: dict[int, int] = defaultdict(int)
    for r in rankings:
        top_votes[r[0]] += 1
    return {
        "turn_id": turn.pk,
        "judgements": len(rankings),
        "ranking": ranking,
        "letters": [letters.get(pk, "?") for pk in ranking],
        "strengths": agreement.bradley_terry(comparisons),
        "top_votes": dict(top_votes),
        "agreement": agreement.top_choice_agreement(rankings),
        "gold_best_response_id": gold_best.first(),
    }
