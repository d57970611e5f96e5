"""config.query_shapes: a queryset's SQL written once, run again with new values, gives what the
queryset itself gives (instances, select_related objects, annotations, values_list rows); an
UPDATE's (UpdateShape) changes what `queryset.update` changes."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from collection import selectors
from collection.judgements import judgement_submit
from collection.models import Judgement, Response, Turn
from config.query_shapes import (
    INT,
    PK,
    PKS,
    TEXT,
    TIME,
    QueryShape,
    QueryShapeError,
    UpdateShape,
)
from tests.collection.test_review_boosted import judged_turns, reviewed_conversation
from tests.conftest import _user_with_role


@pytest.fixture
def carol(db, django_user_model):
    return _user_with_role(django_user_model, "carol", "contractor")


@pytest.fixture
def dave(db, django_user_model):
    return _user_with_role(django_user_model, "dave", "contractor")


def _fields(turn):
    """What a row carries: the turn's own values and its selected relations'."""
    conversation = turn.conversation
    return (
        [getattr(turn, f.attname) for f in Turn._meta.concrete_fields],
        [getattr(conversation, f.attname) for f in conversation._meta.concrete_fields],
        [
            getattr(conversation.campaign, f.attname)
            for f in conversation.campaign._meta.concrete_fields
        ],
    )


@pytest.fixture
def two_queues(lm, alice, bob, carol):
    """Turns alice and bob each wrote and judged; carol has judged one of alice's."""
    alices = judged_turns(reviewed_conversation(lm, alice, max_turns=5), alice, 3)
    bobs = judged_turns(reviewed_conversation(lm, bob, max_turns=5), bob, 2)
    judgement_submit(turn=alices[0], contractor=carol, scale=7)
    return alices, bobs


def _reviewable(contractor):
    return (
        selectors.reviewable_turns(contractor=contractor)
        .select_related("conversation__campaign")
        .order_by("created_at", "pk")
    )


@pytest.mark.django_db
def test_rows_equal_the_querysets_for_each_new_value(two_queues, alice, bob, carol):
    shape = QueryShape(_reviewable, contractor=PK)
    for contractor in (alice, bob, carol, alice.pk, carol):
        expected = list(_reviewable(contractor))
        got = shape.fetch(contractor=contractor)
        assert [_fields(t) for t in got] == [_fields(t) for t in expected]
    assert {t.conversation.contractor_id for t in shape.fetch(contractor=carol)} == {
        alice.pk,
        bob.pk,
    }
    assert len(shape.fetch(contractor=carol)) == 4  # the one carol judged is left out


@pytest.mark.django_db
def test_related_objects_and_annotations_come_in_the_one_query(
    two_queues, carol, django_assert_num_queries
):
    alices, _ = two_queues

    def judged_by(contractor, turn):
        theirs = Judgement.objects.filter(turn=OuterRef("pk"), contractor=contractor)
        return (
            Turn.objects.select_related("conversation__campaign")
            .annotate(mine=Subquery(theirs.values("pk")[:1]))
            .filter(pk=turn)
        )

    shape = QueryShape(judged_by, contractor=PK, turn=PK)
    shape.fetch(contractor=carol, turn=alices[1])  # compiled here
    with django_assert_num_queries(1):
        (turn,) = shape.fetch(contractor=carol, turn=alices[0])
        assert turn.conversation.campaign.overlap_target == 2
    assert turn.mine == Judgement.objects.get(turn=alices[0], contractor=carol).pk
    assert shape.fetch(contractor=carol, turn=alices[1])[0].mine is None


@pytest.mark.django_db
def test_values_lists_id_lists_of_each_length_and_times(two_queues):
    alices, bobs = two_queues
    every = alices + bobs
    shape = QueryShape(
        lambda turns, before: (
            Response.objects.filter(turn__in=turns, turn__created_at__lt=before)
            .order_by("turn_id", "index")
            .values_list("turn_id", "index")
        ),
        turns=PKS,
        before=TIME,
    )
    later = timezone.now() + timedelta(days=1)
    for chosen in (every[:1], every[1:4], every, [every[2], every[0]]):
        expected = list(
            Response.objects.filter(turn__in=chosen)
            .order_by("turn_id", "index")
            .values_list("turn_id", "index")
        )
        assert shape.fetch(turns=chosen, before=later) == expected
        assert len(expected) == 2 * len(chosen)
    Turn.objects.filter(pk=every[0].pk).update(created_at=later)  # after `before` now
    assert shape.fetch(turns=every[:2], before=later) == [(every[1].pk, 0), (every[1].pk, 1)]
    assert shape.fetch(turns=every[:2], before=later + timedelta(seconds=1))[0][0] == every[0].pk


@pytest.mark.django_db
def test_a_value_that_shapes_the_sql_is_refused():
    with pytest.raises(QueryShapeError, match="shape"):
        QueryShape(lambda n: Turn.objects.all()[:n], n=PK).fetch(n=3)
    # A comparison Django drops (out of the column's range) leaves no place for the value.
    with pytest.raises(QueryShapeError, match="not among the compiled parameters"):
        QueryShape(lambda i: Turn.objects.filter(index__lt=i * 10), i=PK).fetch(i=1)
    with pytest.raises(TypeError, match="expected values"):
        QueryShape(lambda turn: Turn.objects.filter(pk=turn), turn=PK).fetch(other=1)
    with pytest.raises(ValueError, match="unknown kinds"):
        QueryShape(lambda turn: Turn.objects.filter(pk=turn), turn="json")


@pytest.mark.django_db
def test_text_is_compared_as_it_is_and_a_rewritten_text_is_refused(two_queues, alice, bob):
    shape = QueryShape(
        lambda name: Turn.objects.filter(conversation__contractor__username=name).order_by("pk"),
        name=TEXT,
    )
    for user in (alice, bob, alice):
        expected = list(Turn.objects.filter(conversation__contractor=user).order_by("pk"))
        assert shape.fetch(name=user.username) == expected
    assert shape.fetch(name="%") == []  # a string, not a pattern
    with pytest.raises(TypeError, match="must be a string"):
        shape.fetch(name=alice.pk)
    for lookup in ("contains", "startswith", "iexact"):
        pattern = QueryShape(
            lambda name, lookup=lookup: Turn.objects.filter(
                **{f"conversation__contractor__username__{lookup}": name}
            ),
            name=TEXT,
        )
        if lookup == "iexact" and connection.vendor == "postgresql":  # UPPER(%s): as it is
            assert pattern.fetch(name=alice.username.upper()) == list(
                Turn.objects.filter(conversation__contractor=alice)
            )
            continue  # on SQLite `iexact` is a LIKE pattern: refused below
        with pytest.raises(QueryShapeError, match="not among the compiled parameters"):
            pattern.fetch(name=alice.username)


@pytest.mark.django_db
def test_an_id_no_column_can_hold_gets_what_the_orm_gives(two_queues, django_assert_num_queries):
    alices, _ = two_queues
    shape = QueryShape(lambda turn: Turn.objects.filter(pk=turn), turn=PK)
    many = QueryShape(lambda turns: Turn.objects.filter(pk__in=turns), turns=PKS)
    assert shape.fetch(turn=alices[0]) == [alices[0]]
    for huge in (10**20, -(10**20), 2**63):
        with django_assert_num_queries(0):  # the ORM drops the comparison: nothing to ask
            assert shape.fetch(turn=huge) == []
        assert many.fetch(turns=[alices[1], huge]) == [alices[1]]
    assert shape.fetch(turn=2**63 - 1) == []  # the largest bigint goes through the shape


@pytest.mark.django_db(transaction=True)
def test_a_lock_outside_a_transaction_is_refused_before_and_after_compiling(lm, alice):
    (turn,) = judged_turns(reviewed_conversation(lm, alice, max_turns=2), alice, 1)
    shape = QueryShape(lambda turn: Turn.objects.select_for_update().filter(pk=turn), turn=PK)
    with pytest.raises(TransactionManagementError):
        shape.fetch(turn=turn)
    with transaction.atomic():
        assert shape.fetch(turn=turn) == [turn]
    with pytest.raises(TransactionManagementError):
        shape.fetch(turn=turn)


@pytest.mark.django_db
def test_the_review_queue_hands_out_what_the_orm_would(two_queues, carol, dave):
    """review_next runs on shapes: the same turns, in the same order, as its querysets."""
    alices, bobs = two_queues
    for contractor in (carol, dave):
        expected = list(selectors.review_queue(contractor=contractor).order_by("created_at")[:1])
        assert selectors.review_next(contractor=contractor) == expected[0]
    assert selectors.review_next(contractor=carol) == alices[1]
    assert selectors.reviewable_turn(contractor=carol, turn_id=alices[0].pk) == alices[0]
    assert (
        selectors.reviewable_turn(
            contractor=alices[0].conversation.contractor, turn_id=alices[0].pk
        )
        is None
    )


def _held(turn):
    return Turn.objects.values_list("review_claimed_by", "review_claimed_until").get(pk=turn.pk)


@pytest.mark.django_db
def test_an_update_shape_changes_what_the_orm_update_changes(two_queues, carol, dave):
    alices, bobs = two_queues
    shape = UpdateShape(selectors._HOLD.build, **selectors._HOLD.kinds)  # compiled anew
    now = timezone.now()
    later = now + timedelta(minutes=10)
    assert shape.run(turn=alices[1], contractor=carol, now=now, until=later) == 1
    assert _held(alices[1]) == (carol.pk, later)
    # Held by carol: dave's hold changes nothing, as the ORM's own update would not...
    queryset, _ = selectors._HOLD.build(alices[1].pk, dave.pk, now, later)
    assert queryset.update(review_claimed_by=dave) == 0
    assert shape.run(turn=alices[1], contractor=dave, now=now, until=later) == 0
    assert _held(alices[1]) == (carol.pk, later)
    # ...until the hold has run out; then every new value is the call's, not the compiled one.
    after = later + timedelta(seconds=1)
    assert shape.run(turn=alices[1], contractor=dave, now=after, until=after) == 1
    assert _held(alices[1]) == (dave.pk, after)
    assert shape.run(turn=bobs[0].pk, contractor=dave.pk, now=now, until=later) == 1
    assert _held(bobs[0]) == (dave.pk, later)
    assert shape.run(turn=10**20, contractor=dave, now=now, until=later) == 0  # the ORM's own


@pytest.mark.django_db
def test_an_update_shape_sets_integers_and_shape_chosen_nulls(two_queues, carol):
    alices, _ = two_queues

    def counted(turn, count, shape):
        changes = {"judgement_count": count, "needs_review": shape[0]}
        if shape[1]:
            changes |= {"review_claimed_by": None, "review_claimed_until": None}
        return Turn.objects.filter(pk=turn), changes

    shape = UpdateShape(counted, turn=PK, count=INT)
    Turn.objects.filter(pk=alices[2].pk).update(review_claimed_by=carol)
    assert shape.run(turn=alices[2], count=41, shape=(True, False)) == 1
    row = Turn.objects.values_list("judgement_count", "needs_review", "review_claimed_by")
    assert row.get(pk=alices[2].pk) == (41, True, carol.pk)
    assert shape.run(turn=alices[2], count=42, shape=(False, True)) == 1
    assert row.get(pk=alices[2].pk) == (42, False, None)
    with pytest.raises(TypeError, match="integer"):
        shape.run(turn=alices[2], count=True, shape=(False, True))
    with pytest.raises(TypeError, match="run"):
        shape.fetch(turn=alices[2], count=1)


@pytest.mark.django_db
def test_an_update_shape_refuses_what_its_sql_cannot_stand_for(two_queues, carol):
    alices, _ = two_queues
    # Over a join the ORM selects the ids first, a query that would be kept from the first call.
    over_join = UpdateShape(
        lambda who: (Turn.objects.filter(conversation__contractor=who), {"judgement_count": 99}),
        who=PK,
    )
    with pytest.raises(QueryShapeError, match="one table"):
        over_join.run(who=carol)
    ordered = UpdateShape(
        lambda turn: (Turn.objects.filter(pk=turn).order_by("pk"), {"judgement_count": 99}),
        turn=PK,
    )
    with pytest.raises(QueryShapeError, match="ordered"):
        ordered.run(turn=alices[0])
    assert not Turn.objects.filter(judgement_count=99).exists()  # neither ran


@pytest.mark.django_db
def test_a_failed_update_shape_marks_the_transaction_for_rollback(two_queues):
    alices, _ = two_queues
    shape = UpdateShape(
        lambda turn, count: (Turn.objects.filter(pk=turn), {"judgement_count": count}),
        turn=PK,
        count=INT,
    )
    with pytest.raises(transaction.TransactionManagementError), transaction.atomic():
        with pytest.raises(IntegrityError):  # a positive integer's CHECK refuses it
            shape.run(turn=alices[0], count=-1)
        Turn.objects.count()  # the ORM, as after a failed .update(): roll back first
