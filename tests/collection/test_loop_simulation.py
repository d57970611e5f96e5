"""Issue 14, must-show 2: the online loop, simulated end to end with no network and no real
model. Synthetic contractors with a known preference judge turns of a tiny random LM; a PM
trained on round 1 through the training service picks best-of-8 pairs in round 2, and the
contractors' choices agree with its top pick well above chance; reliability gives the random
contractor a lower weight than the honest ones, and weighted consensus recovers the known
preference more often than unweighted. Seeds are fixed; margins leave room for float noise.

The known preference: a tiny random LM writes mostly garbage, and contractors prefer the
response with more plain ASCII letters and fewer unprintable or replacement characters.
"""

import math
import random

import pytest

from assistant import runtime
from assistant.services import model_version_register
from collection.agreement import consensus_ranking
from collection.conversations import conversation_start, turn_submit
from collection.generation import turn_generate
from collection.gold import gold_item_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Judgement, PMAgreement, Turn
from collection.pm_loop import wilson
from collection.reliability import contractor_reliability
from collection.snapshots import snapshot_create
from training import services as training

HONEST_NOISE = 0.2


def quality(text: str) -> int:
    letters = sum(ch.isascii() and ch.isalpha() for ch in text)
    garbled = sum((not ch.isprintable()) or ch == "\ufffd" for ch in text)
    return letters - 2 * garbled


class Contractor:
    def __init__(self, user, *, honest: bool, seed: int):
        self.user, self.honest, self.rng = user, honest, random.Random(seed)

    def pick(self, texts: list[str]) -> int:
        """The index of the response this contractor prefers."""
        if not self.honest:
            return self.rng.randrange(len(texts))
        scores = [quality(t) for t in texts]
        best = max(range(len(texts)), key=lambda i: (scores[i], -i))
        if scores.count(scores[best]) > 1 or self.rng.random() < HONEST_NOISE:
            return self.rng.choice([i for i in range(len(texts)) if i != best])
        return best

    def judge(self, turn: Turn) -> Judgement:
        texts = list(turn.responses.order_by("index").values_list("text", flat=True))
        pick = self.pick(texts)
        return judgement_submit(turn=turn, contractor=self.user, scale=2 if pick == 0 else 7)


def truth(turn: Turn) -> int | None:
    """The response id the known preference picks; None when the two are equally good."""
    rows = list(turn.responses.order_by("index").values_list("pk", "text"))
    scores = [quality(text) for _, text in rows]
    if scores[0] == scores[1]:
        return None
    return rows[0][0] if scores[0] > scores[1] else rows[1][0]


def hold_conversations(campaign, contractors, *, conversations: int, turns: int, seed: int):
    """Each conversation by the next contractor in turn; every turn judged by its author."""
    made = []
    for c in range(conversations):
        author = contractors[c % len(contractors)]
        conversation = conversation_start(campaign=campaign, contractor=author.user)
        for t in range(turns):
            turn = turn_submit(
                conversation=conversation, contractor=author.user, text=f"Question {seed}.{c}.{t}?"
            )
            turn = turn_generate(turn_id=turn.pk)
            assert turn.status == Turn.Status.READY, turn.error
            author.judge(turn)
            made.append((turn, author))
    return made


def make_contractors(django_user_model) -> tuple[list[Contractor], Contractor]:
    """Four honest contractors (seeds 0 to 3) and a random one (seed 99)."""
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name="contractor")
    users = []
    for name in ("h1", "h2", "h3", "h4", "random"):
        user = django_user_model.objects.create_user(name, password="x")
        user.groups.add(group)
        users.append(user)
    honest = [Contractor(u, honest=True, seed=i) for i, u in enumerate(users[:4])]
    return honest, Contractor(users[4], honest=False, seed=99)


def round_one(lm, everyone, adversary, adam):
    """Plain sampling, each turn judged by its author and one reviewer; the random contractor
    reviews every other turn, and everyone answers 12 gold items. (campaign, judged turns)"""
    round1 = Campaign.objects.create(
        name="round 1", lm_version=lm, prompt=None, max_turns=4, overlap_target=2,
        quota_per_contractor=1000,
    )  # fmt: skip
    judged = hold_conversations(round1, everyone, conversations=40, turns=4, seed=1)
    for i, (turn, author) in enumerate(judged):
        others = [c for c in everyone if c is not author]
        reviewer = adversary if (i % 2 == 0 and author is not adversary) else None
        reviewer = reviewer or random.Random(i).choice([c for c in others if c.honest])
        reviewer.judge(Turn.objects.get(pk=turn.pk))
    gold_rng = random.Random(5)
    clean = ["Water it once a week and give it light.", "Try a short walk after lunch."]
    garbled = ["\ufffd\x10es5s\ufffd\x00 do\ufffd\ufffd", "th\ufffd them\ufffd<\x1e\ufffd anm"]
    for g in range(12):
        good, bad = clean[g % 2], garbled[g % 2]
        best = gold_rng.randrange(2)
        gold = gold_item_create(
            campaign=round1, admin=adam, human_text=f"Gold question {g}?",
            responses=[good, bad] if best == 0 else [bad, good], best_index=best,
        )  # fmt: skip
        for contractor in everyone:
            contractor.judge(Turn.objects.get(pk=gold.pk))
    return round1, judged


def consensus_right(judged, reliability) -> tuple[int, int, int]:
    """(weighted right, unweighted right, decided): how often the consensus of a turn's
    judgements, weighted by reliability or not, picks the known preference's response."""
    weighted_right = plain_right = decided = 0
    for turn, _ in judged:
        answer = truth(turn)
        rows = list(turn.judgements.values_list("ranking", "contractor_id"))
        if answer is None or len(rows) < 2:
            continue
        decided += 1
        rankings = [ranking for ranking, _ in rows]
        weights = [reliability[contractor].weight for _, contractor in rows]
        plain_right += consensus_ranking(rankings)[0] == answer
        weighted_right += consensus_ranking(rankings, weights)[0] == answer
    return weighted_right, plain_right, decided


def train_pm(round1, lm):
    """A PM trained on round 1 through the training service (the tiny LM as its backbone)."""
    snapshot = snapshot_create(filter={"campaigns": [round1.pk]}, name="round 1")
    run = training.training_run_create(
        kind="pm",
        snapshot=snapshot,
        base_model=lm,
        config={
            "max_steps": 160, "batch_size": 8, "lr": 3e-3, "warmup_steps": 10,
            "max_length": 64, "eval_every": 0, "checkpoint_every": 0, "bf16": False, "seed": 0,
        },
    )  # fmt: skip
    run = training.training_run_execute(run=training.training_run_claim(run_id=run.pk))
    assert run.status == "succeeded", run.error + run.log_tail
    return run.result_version


@pytest.mark.django_db
@pytest.mark.timeout(300)
def test_the_loop_learns_the_contractors_preference_and_weighs_the_random_one_down(
    django_user_model, settings, tiny_lm_path, adam
):
    settings.COLLECTION_MESSAGES_PER_MINUTE = 10_000
    honest, adversary = make_contractors(django_user_model)
    everyone = [*honest, adversary]
    lm = model_version_register(
        kind="lm",
        name="tiny",
        path=str(tiny_lm_path),
        generation_defaults={"max_new_tokens": 12, "temperature": 1.0, "seed": 0},
    )
    round1, judged = round_one(lm, everyone, adversary, adam)

    # Reliability: the random contractor weighs less than every honest one.
    reliability = contractor_reliability(campaign=round1)
    honest_weights = [reliability[c.user.pk].weight for c in honest]
    assert reliability[adversary.user.pk].weight < min(honest_weights) - 0.1, reliability
    assert reliability[adversary.user.pk].rate < min(reliability[c.user.pk].rate for c in honest)

    # Weighted consensus recovers the known preference more often than unweighted.
    weighted_right, plain_right, decided = consensus_right(judged, reliability)
    assert decided >= 100
    assert weighted_right / decided >= 0.72, (weighted_right, plain_right, decided)
    assert weighted_right - plain_right >= 0.06 * decided, (weighted_right, plain_right, decided)

    pm = train_pm(round1, lm)

    # Round 2: best-of-8, the PM's best against its worst; honest contractors judge.
    round2 = Campaign.objects.create(
        name="round 2", lm_version=lm, prompt=None, max_turns=4, quota_per_contractor=1000,
        best_of_n=8, selection_rule="top_vs_bottom", pm_version=pm,
    )  # fmt: skip
    judged2 = hold_conversations(round2, honest, conversations=20, turns=4, seed=2)
    rows = PMAgreement.objects.filter(campaign=round2)
    assert rows.count() == len(judged2) == 80
    agreement = rows.filter(agrees=True).count() / rows.count()
    # Chance is 0.5, and 0.8 the most (honest contractors are right 80 % of the time): a PM
    # whose top pick is truly better with probability q gives 0.2 + 0.6 q (0.71 here, q = 0.85).
    assert agreement >= 0.63, agreement
    assert wilson(rows.filter(agrees=True).count(), rows.count())[0] > 0.5
    # And the PM's pick is better by the known preference than plain sampling's first sample.
    picked = [quality(turn.responses.get(pm_rank=1).text) for turn, _ in judged2]
    plain = [quality(text) for turn, _ in judged for text in [turn.responses.get(index=0).text]]
    assert sum(picked) / len(picked) > sum(plain) / len(plain) + 1.0
    runtime.unload_all()


def test_reliability_shrinks_little_evidence_to_the_mean_and_weights_coins_zero():
    from collection.reliability import reliability_from_counts

    counts = {
        1: ("steady", 160.0, 200.0),  # 0.8 over 200
        2: ("coin", 100.0, 200.0),  # 0.5 over 200
        3: ("newcomer", 2.0, 2.0),  # 2 of 2: little evidence
    }
    result = reliability_from_counts(counts, prior_strength=20)
    pooled = 262 / 402
    assert result[3].rate == pytest.approx((2 + 20 * pooled) / 22)
    assert abs(result[3].rate - pooled) < 0.04  # near the mean, not at 1.0
    assert result[1].rate == pytest.approx((160 + 20 * pooled) / 220)
    assert result[2].weight < 0.1 < 1.0 < result[1].weight  # a coin barely counts
    assert result[1].weight == pytest.approx(math.log(result[1].rate / (1 - result[1].rate)))


def test_weighted_consensus_follows_the_heavier_judge():
    rankings = [[10, 20], [20, 10]]
    assert consensus_ranking(rankings) == [10, 20]  # a tie: the lower mean position, then id
    assert consensus_ranking(rankings, [0.2, 1.0]) == [20, 10]
    assert consensus_ranking(rankings, [1.0, 0.2]) == [10, 20]
    assert consensus_ranking([[10, 20]], [0.0]) == [10, 20]  # weight 0 only: display order
    with pytest.raises(ValueError, match="one weight per ranking"):
        consensus_ranking(rankings, [1.0])
