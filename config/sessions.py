"""The session engine: Django's database sessions, loaded by SQL written once per thread.

`SESSION_ENGINE = "config.sessions"`. The same table, rows and cookies as
`django.contrib.sessions.backends.db`, so switching either way keeps everyone signed in; only
the lookup on every request differs: the ORM built `Session.objects.get(...)`'s SQL anew on each
one, about a third of the cost of reading a session (py-spy on the web load, BENCHMARKS.md
"Session 14"). A cached or signed-cookie engine would save the query itself, but a per-process
cache does not see a sign-out in another worker, and a signed cookie stays valid after one.
"""

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.db import router
from django.utils import timezone

from config.query_shapes import TEXT, TIME, QueryShape

_SESSION = QueryShape(
    lambda key, now: Session.objects.filter(session_key=key, expire_date__gt=now).only(
        "session_data"
    )[:1],
    key=TEXT,
    now=TIME,
)


class SessionStore(DatabaseSessionStore):
    def _get_session_from_db(self):
        using = router.db_for_read(self.model)
        found = _SESSION.fetch(using=using, key=self.session_key, now=timezone.now())
        if found:
            return found[0]
        self._session_key = None  # as Django's: a key with no live session is dropped
        return None
