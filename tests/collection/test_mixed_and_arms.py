"""Mixed campaigns (the contractor picks pairwise or ranking per turn), campaigns that spread
each turn's responses over LM versions and sampling variants (the arms of an Elo comparison),
and the text the model has written so far, saved while it streams."""

from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from assistant.services import model_version_register
from collection.conversations import conversation_start, turn_submit
from collection.errors import CollectionError
from collection.generation import assign_arms, turn_generate
from collection.gold import gold_item_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Judgement, Turn

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_2(tiny_lm_path):
    return model_version_register(
        kind="lm",
        name="tiny-2",
        path=str(tiny_lm_path),
        generation_defaults={"max_new_tokens": 5, "seed": 1},
    )


def campaign(tiny, **fields):
    defaults = {"name": "c", "lm_version": tiny, "prompt": None, "k": 3, "max_turns": 4}
    defaults["judgement_type"] = "ranking"
    made = Campaign(**{**defaults, **fields})
    made.full_clean()
    made.save()
    return made


def generate(conversation, who, text, capture, **kwargs):
    with capture(execute=False):
        turn = turn_submit(conversation=conversation, contractor=who, text=text, **kwargs)
    return turn_generate(turn_id=turn.pk)


def test_a_mixed_campaign_judges_each_turn_the_way_the_contractor_picked(
    tiny, alice, django_capture_on_commit_callbacks
):
    mixed = campaign(tiny, judgement_type="mixed", k=3)
    convo = conversation_start(campaign=mixed, contractor=alice)
    with pytest.raises(CollectionError, match="Choose how to judge"):
        turn_submit(conversation=convo, contractor=alice, text="Hi")

    pair = generate(
        convo, alice, "Hi", django_capture_on_commit_callbacks, judgement_type="pairwise"
    )
    assert pair.judgement_type == "pairwise" and pair.offered_k == 2
    assert pair.responses.count() == 2
    with pytest.raises(CollectionError, match="scale"):
        judgement_submit(turn=pair, contractor=alice, ranking=[r.pk for r in pair.responses.all()])
    a, b = pair.responses.order_by("index")
    judged = judgement_submit(turn=pair, contractor=alice, scale=7)
    assert judged.ranking == [b.pk, a.pk] and judged.scale == 7 and judged.strength == 3

    ranked = generate(
        convo, alice, "More?", django_capture_on_commit_callbacks, judgement_type="ranking"
    )
    assert ranked.judgement_type == "ranking" and ranked.responses.count() == 3
    x, y, z = ranked.responses.order_by("index")
    with pytest.raises(CollectionError, match="Rank all 3"):
        judgement_submit(turn=ranked, contractor=alice, scale=2)
    judged = judgement_submit(turn=ranked, contractor=alice, ranking=[z.pk, x.pk, y.pk])
    assert judged.ranking == [z.pk, x.pk, y.pk] and judged.scale is None and judged.strength is None
    assert Judgement.objects.filter(turn__conversation=convo).count() == 2


def test_a_campaign_of_one_judgement_type_refuses_another(tiny, alice):
    pairwise = campaign(tiny, judgement_type="pairwise", k=2)
    convo = conversation_start(campaign=pairwise, contractor=alice)
    with pytest.raises(CollectionError, match="judged pairwise"):
        turn_submit(conversation=convo, contractor=alice, text="Hi", judgement_type="ranking")
    turn = turn_submit(conversation=convo, contractor=alice, text="Hi", judgement_type="pairwise")
    assert turn.judgement_type == "" and turn.judged_as == "pairwise"


def test_campaign_settings_are_checked_with_the_field_named(tiny):
    with pytest.raises(ValidationError) as error:
        campaign(tiny, judgement_type="mixed", k=2)
    assert "k" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        campaign(tiny, sampling_variants=[{"name": "hot", "temprature": 1.2}])
    assert "temprature" in str(error.value.message_dict["sampling_variants"])
    with pytest.raises(ValidationError, match="different name"):
        campaign(tiny, sampling_variants=[{"name": "a", "top_p": 0.5}, {"name": "a"}])
    with pytest.raises(ValidationError, match="hot: top_p"):
        campaign(tiny, sampling_variants=[{"name": "hot", "top_p": 1.5}])
    with pytest.raises(ValidationError) as error:
        campaign(tiny, sampling={"temperature": -1})
    assert "sampling" in error.value.message_dict


@pytest.mark.parametrize(
    ("n_arms", "k", "counts"),
    [(1, 3, [3]), (2, 2, [1, 1]), (2, 3, [2, 1]), (4, 2, [1, 1]), (3, 8, [3, 3, 2])],
)
def test_arms_are_spread_as_evenly_as_k_allows(n_arms, k, counts):
    for seed in range(20):
        slots = assign_arms(n_arms, k, seed=seed)
        assert len(slots) == k and sorted(Counter(slots).values(), reverse=True) == counts
    # Over many turns no arm owns position A.
    firsts = Counter(assign_arms(2, 2, seed=seed)[0] for seed in range(200))
    assert 70 <= firsts[0] <= 130


def test_a_turn_spreads_its_responses_over_versions_and_sampling_variants(
    tiny, tiny_2, alice, django_capture_on_commit_callbacks
):
    arena = campaign(
        tiny,
        judgement_type="ranking",
        k=4,
        sampling={"top_p": 0.9},
        sampling_variants=[
            {"name": "cool", "temperature": 0.3},
            {"name": "hot", "temperature": 1.3},
        ],
    )
    arena.compare_versions.add(tiny_2, tiny)  # tiny again: counted once
    assert [(v.name, name) for v, name, _ in arena.arms()] == [
        ("tiny", "cool"),
        ("tiny", "hot"),
        ("tiny-2", "cool"),
        ("tiny-2", "hot"),
    ]
    convo = conversation_start(campaign=arena, contractor=alice)
    turn = generate(convo, alice, "Tell me something.", django_capture_on_commit_callbacks)
    assert turn.status == Turn.Status.READY
    responses = list(turn.responses.order_by("index"))
    arms = {(r.model_version.name, r.condition) for r in responses}
    assert len(arms) == 4  # k = 4 responses, 4 arms: one each
    for response in responses:
        params = response.sampling_params
        assert params["temperature"] == {"cool": 0.3, "hot": 1.3}[response.condition]
        assert params["top_p"] == 0.9  # the campaign's sampling, under each variant
        assert params["max_new_tokens"] == {"tiny": 6, "tiny-2": 5}[response.model_version.name]
        assert response.completion_tokens <= params["max_new_tokens"]


def test_the_text_so_far_is_saved_while_the_model_streams_and_cleared_after(
    tiny, alice, settings, django_capture_on_commit_callbacks
):
    settings.COLLECTION_STREAM_SAVE_S = 0  # save at every streamed piece
    convo = conversation_start(campaign=campaign(tiny, judgement_type="ranking"), contractor=alice)
    with django_capture_on_commit_callbacks(execute=False):
        turn = turn_submit(conversation=convo, contractor=alice, text="Write a story.")
    with CaptureQueriesContext(connection) as queries:
        turn = turn_generate(turn_id=turn.pk)
    saves = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("UPDATE") and "partial_texts" in q["sql"]
    ]
    # The claim (emptied), one save per streamed piece, then the ready update (emptied again).
    assert len(saves) >= 4
    texts = [r.text for r in turn.responses.order_by("index")]
    assert turn.partial_texts == [] and all(texts)
    last_stream = saves[-2]
    assert any(text[:5] in last_stream for text in texts)


def test_the_turn_fragment_shows_the_text_so_far(tiny, alice, client):
    convo = conversation_start(campaign=campaign(tiny), contractor=alice)
    turn = Turn.objects.create(
        conversation=convo,
        index=0,
        human_text="Hi",
        status=Turn.Status.GENERATING,
        judgement_type="",
        partial_texts=["Once upon", "In a land far", ""],
    )
    client.force_login(alice)
    page = client.get(
        reverse("collection:turn", args=[turn.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "The model is writing 3 responses" in page
    assert "Response A</h3>Once upon" in page and "Response B</h3>In a land far" in page
    assert 'hx-trigger="every 1s"' in page  # still polling


def test_the_message_form_of_a_mixed_campaign_asks_how_to_judge(tiny, alice, client):
    convo = conversation_start(campaign=campaign(tiny, judgement_type="mixed"), contractor=alice)
    client.force_login(alice)
    url = reverse("collection:conversation", args=[convo.pk])
    page = client.get(url).content.decode()
    assert 'name="judgement_type" value="pairwise"' in page and "rank all 3" in page
    # A message sent without the choice is refused and kept.
    sent = client.post(reverse("collection:message", args=[convo.pk]), {"text": "Keep me"})
    assert sent.status_code == 200 and "Keep me" in sent.content.decode()
    assert "Choose how to judge the responses: this field is required." in sent.content.decode()
    assert not Turn.objects.filter(conversation=convo).exists()
    sent = client.post(
        reverse("collection:message", args=[convo.pk]),
        {"text": "Keep me", "judgement_type": "ranking"},
    )
    assert sent.status_code == 302
    assert Turn.objects.get(conversation=convo).judgement_type == "ranking"


def test_gold_items_of_a_mixed_campaign_are_pairs_or_rankings(tiny, adam):
    mixed = campaign(tiny, judgement_type="mixed", k=3)
    pair = gold_item_create(
        campaign=mixed, admin=adam, human_text="Q", responses=["a", "b"], best_index=0
    )
    ranked = gold_item_create(
        campaign=mixed, admin=adam, human_text="Q", responses=["a", "b", "c"], best_index=2
    )
    assert (pair.judged_as, ranked.judged_as) == ("pairwise", "ranking")
    with pytest.raises(CollectionError, match="2 responses"):
        gold_item_create(
            campaign=mixed, admin=adam, human_text="Q", responses=["a", "b", "c", "d"], best_index=0
        )
