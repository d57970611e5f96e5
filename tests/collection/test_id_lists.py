"""`__any_of`: ids as one array parameter on PostgreSQL, IN (…) elsewhere; the same rows."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from collection import id_lists  # noqa: F401 - registers the lookup
from collection.models import Conversation

pytestmark = pytest.mark.django_db


def test_any_of_selects_what_in_selects_by_pk_and_by_foreign_key(alice, make_campaign):
    campaign = make_campaign()
    made = [Conversation.objects.create(campaign=campaign, contractor=alice).pk for _ in range(4)]
    some = {made[0], made[2], 10**12}  # an id no row has matches nothing
    assert set(Conversation.objects.filter(pk__any_of=some).values_list("pk", flat=True)) == {
        made[0],
        made[2],
    }
    assert not Conversation.objects.filter(pk__any_of=set()).exists()
    by_campaign = Conversation.objects.filter(campaign_id__any_of={campaign.pk})
    assert sorted(by_campaign.values_list("pk", flat=True)) == made
    with CaptureQueriesContext(connection) as queries:
        assert Conversation.objects.filter(pk__any_of=set(range(1, 5001))).count() == 4
    (sql,) = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "postgresql":  # one array literal, not 5,000 parameters
        assert "= ANY(" in sql and "::bigint[]" in sql and " IN (" not in sql
    else:
        assert " IN (" in sql
