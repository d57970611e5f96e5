"""Sign-in backend: Django's model backend, with the user's roles read in the same query.

Every signed-in request loads its user from the session and then asks for the user's roles
(`config.roles.user_roles`): two queries, each with its SQL built by the ORM anew. Here one
query, written once per thread (`config.query_shapes`), returns the user with a flag per role,
and the roles are cached on the user as `user_roles` would cache them. Passwords, permissions
and `is_active` are the model backend's, unchanged.
"""

from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef

from config.query_shapes import PK, QueryShape
from config.roles import ROLES

# The backend's dotted path, as `login` stores it in the session and settings list it.
PATH = "config.auth_backends.RolesBackend"
# Sessions started before this backend name Django's; `upgrade_session_backend` renames them.
LEGACY_PATH = "django.contrib.auth.backends.ModelBackend"


def _user_with_roles(user):
    flags = {
        f"_has_role_{role}": Exists(Group.objects.filter(user=OuterRef("pk"), name=role))
        for role in ROLES
    }
    return get_user_model()._default_manager.filter(pk=user).annotate(**flags)


_USER_WITH_ROLES = QueryShape(_user_with_roles, user=PK)


class RolesBackend(ModelBackend):
    def get_user(self, user_id):
        found = _USER_WITH_ROLES.fetch(user=user_id)
        if not found or not self.user_can_authenticate(found[0]):
            return None
        user = found[0]  # its group roles, cached as `user_roles` caches them
        user._alignlab_roles = frozenset(r for r in ROLES if getattr(user, f"_has_role_{r}"))
        return user


def upgrade_session_backend(get_response):
    """Middleware (after the session's, before the authentication's): a session signed in
    through Django's model backend is moved to `RolesBackend`, so no one is signed out when
    the backend changes (Django signs out a session whose backend is no longer listed). It has
    nothing left to do once every session from before it has expired (SESSION_COOKIE_AGE)."""

    def middleware(request):
        if request.session.get(BACKEND_SESSION_KEY) == LEGACY_PATH:
            request.session[BACKEND_SESSION_KEY] = PATH
        return get_response(request)

    return middleware
