"""Researchers build datasets in the UI: a snapshot form with fields, and a browser of the
collected conversations with their judgements; contractors reach none of it."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from collection import dataset_views
from collection.imports import dataset_import_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, DatasetSnapshot, Judgement, Response, Turn
from tests.training.test_runs import toy_trl_file

pytestmark = pytest.mark.django_db


def _turn(campaign, contractor, text, responses=("Sure: here it is.", "No."), index=0, conv=None):
    conv = conv or Conversation.objects.create(campaign=campaign, contractor=contractor)
    turn = Turn.objects.create(
        conversation=conv, index=index, human_text=text, status=Turn.Status.READY
    )
    Response.objects.bulk_create(
        [
            Response(turn=turn, index=i, text=t, model_version=campaign.lm_version)
            for i, t in enumerate(responses)
        ]
    )
    return turn


def _judge(turn, contractor, scale=2, flags=()):
    return judgement_submit(turn=turn, contractor=contractor, scale=scale, flags=flags)


def _post(client, **fields):
    return client.post(reverse("collection:datasets"), fields)


def test_the_empty_snapshot_form_makes_a_snapshot_of_every_collected_judgement(
    client, rita, alice, active_lm
):
    campaign = Campaign.objects.create(name="c", lm_version=active_lm)
    _judge(_turn(campaign, alice, "hello"), alice)
    client.force_login(rita)
    page = client.get(reverse("collection:datasets")).content.decode()
    assert 'name="campaigns"' in page and 'name="min_gold_accuracy"' in page
    assert 'id="id_filter">\n</textarea>' in page  # the JSON box starts empty, folded away
    made = _post(client)  # nothing filled in, as the page first shows it
    assert made.status_code == 302, made.context["form"].errors
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.filter == {"sources": ["collected"], "consensus_only": False}
    assert snapshot.counts["judgements"] == 1


def test_the_fields_build_the_filter_that_snapshot_create_gets(client, rita, alice, bob, active_lm):
    helpful = Campaign.objects.create(name="helpful one", lm_version=active_lm)
    red = Campaign.objects.create(name="red one", lm_version=active_lm, mode=Campaign.Mode.RED_TEAM)
    kept = _judge(_turn(helpful, alice, "plan a trip"), alice)
    _judge(_turn(red, bob, "do harm"), bob)
    old = _judge(_turn(helpful, bob, "an old one"), bob)
    Judgement.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    client.force_login(rita)
    today = timezone.localdate()
    made = _post(
        client,
        name="helpful, this week",
        campaigns=[helpful.pk, red.pk],
        modes=["helpful"],
        date_from=(today - timedelta(days=3)).isoformat(),
        date_to=today.isoformat(),
        consensus_only="on",
        exclude_eval_prompts="hhh:harmless",
    )
    assert made.status_code == 302, made.context["form"].errors
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.filter == {
        "campaigns": sorted([helpful.pk, red.pk]),
        "modes": ["helpful"],
        "sources": ["collected"],
        "date_from": (today - timedelta(days=3)).isoformat(),
        "date_to": today.isoformat(),
        "consensus_only": True,
        "exclude_eval_prompts": "hhh:harmless",
    }
    from collection.snapshots import snapshot_judgement_ids

    assert snapshot_judgement_ids(snapshot) == [kept.pk]
    page = client.get(reverse("collection:datasets")).content.decode()
    assert "<strong>helpful, this week</strong>" in page  # snapshots shown by name


def test_refusals_show_beside_the_field_they_are_about(client, rita, alice, active_lm, tmp_path):
    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl", n=3), format="trl")
    campaign = Campaign.objects.create(name="c", lm_version=active_lm)
    _judge(_turn(campaign, alice, "hello"), alice)
    client.force_login(rita)

    def errors(**fields):
        response = _post(client, **fields)
        assert response.status_code == 400
        return response.context["form"].errors

    assert (
        "imports selects imported data"
        in errors(imports=[imported.pk], sources=["collected"])["sources"][0]
    )
    assert "less than or equal to 1" in errors(min_gold_accuracy="1.5")["min_gold_accuracy"][0]
    assert "before" in errors(date_from="2031-05-02", date_to="2031-05-01")["date_to"][0]
    assert "no judgements match" in errors(date_from="2031-05-02")["__all__"][0]
    assert "not both" in errors(modes=["helpful"], filter='{"modes": ["honest"]}')["filter"][0]
    assert "unknown filter key(s): campains" in errors(filter='{"campains": [1]}')["filter"][0]
    json_error = errors(filter='{"min_gold_accuracy": 7}')["filter"][0]
    assert json_error.startswith("min_gold_accuracy must be between 0 and 1")
    assert "exclude_eval_prompts" in errors(exclude_eval_prompts="/etc/passwd")
    assert not DatasetSnapshot.objects.exists()
    # Imports chosen with the sources left empty: the import's data alone.
    made = _post(client, imports=[imported.pk])
    assert made.status_code == 302
    assert DatasetSnapshot.objects.get().counts["judgements"] == 3


def test_the_conversation_browser_filters_searches_and_pages(client, rita, alice, bob, active_lm):
    first = Campaign.objects.create(name="first", lm_version=active_lm, overlap_target=2)
    second = Campaign.objects.create(name="second", lm_version=active_lm)
    agreed = _turn(first, alice, "How do I bake sourdough bread?")
    _judge(agreed, alice, scale=2)
    _judge(agreed, bob, scale=3)  # the same top choice (A)
    split = _turn(first, bob, "Tell me about trains")
    _judge(split, bob, scale=2)
    _judge(split, alice, scale=7, flags=["untruthful"])  # B: a different top choice
    lone = _turn(second, alice, "A quiet question", responses=("the zebra answer", "other"))
    _judge(lone, alice, scale=8, flags=["harmful"])
    client.force_login(rita)
    url = reverse("collection:conversations")

    def shown(**params):
        response = client.get(url, params)
        assert response.status_code == 200
        return [c.pk for c in response.context["page"].object_list]

    ids = {"agreed": agreed.conversation_id, "split": split.conversation_id}
    ids["lone"] = lone.conversation_id
    assert shown() == sorted(ids.values(), reverse=True)
    assert shown(campaign=second.pk) == [ids["lone"]]
    assert shown(contractor=bob.pk) == [ids["split"]]
    assert shown(flag="harmful") == [ids["lone"]]
    assert shown(flag="untruthful") == [ids["split"]]
    assert shown(agreement="overlap") == sorted([ids["agreed"], ids["split"]], reverse=True)
    assert shown(agreement="agree") == [ids["agreed"]]
    assert shown(agreement="disagree") == [ids["split"]]
    assert shown(q="SOURDOUGH") == [ids["agreed"]]  # in a message, any case
    assert shown(q="zebra") == [ids["lone"]]  # in a response
    assert shown(q="bob") == [ids["split"]]  # a contractor's name
    assert shown(q="nothing like this") == []
    assert shown(source="imported") == []
    page = client.get(url).content.decode()
    assert "How do I bake sourdough bread?" in page
    assert reverse("collection:conversation_read", args=[ids["agreed"]]) in page
    bad = client.get(url, {"campaign": "999999"})
    assert bad.status_code == 400 and len(bad.context["page"].object_list) == 3


def test_the_browser_pages_with_the_filters_kept(client, rita, alice, active_lm, monkeypatch):
    monkeypatch.setattr(dataset_views, "PAGE_SIZE", 2)
    campaign = Campaign.objects.create(name="c", lm_version=active_lm)
    turns = [_turn(campaign, alice, f"message {i}") for i in range(5)]
    client.force_login(rita)
    url = reverse("collection:conversations")
    first = client.get(url, {"campaign": campaign.pk})
    assert [c.pk for c in first.context["page"].object_list] == [
        turns[4].conversation_id,
        turns[3].conversation_id,
    ]
    assert f"campaign={campaign.pk}&amp;page=2" in first.content.decode()
    last = client.get(url, {"campaign": campaign.pk, "page": 3})
    assert [c.pk for c in last.context["page"].object_list] == [turns[0].conversation_id]
    assert first.context["page"].paginator.count == 5


def test_the_browser_runs_a_fixed_number_of_queries(
    client, rita, alice, active_lm, django_assert_max_num_queries
):
    campaign = Campaign.objects.create(name="c", lm_version=active_lm)
    for i in range(12):
        _judge(_turn(campaign, alice, f"message {i}"), alice)
    client.force_login(rita)
    client.get(reverse("collection:conversations"))  # sessions, roles: warmed up
    with django_assert_max_num_queries(8):
        response = client.get(reverse("collection:conversations"), {"q": "message", "flag": ""})
    assert len(response.context["page"].object_list) == 12


def test_the_read_only_view_shows_every_turn_with_its_judgements(
    client, rita, alice, bob, active_lm
):
    campaign = Campaign.objects.create(name="c", lm_version=active_lm, overlap_target=2)
    turn = _turn(campaign, alice, "Is <b>this</b> bold?", responses=("<script>x()</script>", "B"))
    _judge(turn, alice, scale=1)
    judgement_submit(turn=turn, contractor=bob, scale=6, note="B reads better")
    client.force_login(rita)
    response = client.get(reverse("collection:conversation_read", args=[turn.conversation_id]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "&lt;b&gt;this&lt;/b&gt;" in page and "&lt;script&gt;x()&lt;/script&gt;" in page
    assert "<script>x()" not in page
    assert "alice" in page and "bob" in page and "B reads better" in page
    assert "A &gt; B" in page and "B &gt; A" in page
    assert "1: A much better" in page and "6: B somewhat better" in page
    assert "(continued with)" in page
    # No form on it: nothing here changes anything.
    assert "<form" not in page.split("<main>")[1]


def test_contractors_never_reach_the_dataset_pages(client, alice, active_lm):
    campaign = Campaign.objects.create(name="c", lm_version=active_lm)
    turn = _turn(campaign, alice, "mine")
    client.force_login(alice)
    for url in (
        reverse("collection:datasets"),
        reverse("collection:conversations"),
        reverse("collection:conversation_read", args=[turn.conversation_id]),
        reverse("collection:import_job", args=[1]),
    ):
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("collection:datasets"), {}).status_code == 403
    assert client.post(reverse("collection:import_upload"), {}).status_code == 403
    assert not DatasetSnapshot.objects.exists()
    page = client.get(reverse("collection:dashboard")).content.decode()
    # Not in the navigation either (their own conversations are under /collect/conversations/N/).
    assert f'href="{reverse("collection:conversations")}"' not in page


def test_the_navigation_links_the_new_pages_for_their_roles(client, rita, adam):
    client.force_login(rita)
    page = client.get(reverse("collection:datasets")).content.decode()
    assert f'href="{reverse("collection:conversations")}"' in page
    assert f'href="{reverse("collection:campaigns")}"' not in page
    assert "Under our Content-Security-Policy" not in page  # base.html's comment stays one
    client.force_login(adam)
    page = client.get(reverse("collection:datasets")).content.decode()
    assert reverse("collection:campaigns") in page
