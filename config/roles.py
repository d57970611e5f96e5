"""Roles: contractor, researcher, admin, kept as Django groups with model permissions.

Every app may import this module. A view says who may reach it with `@role_required(...)`;
the groups' model permissions drive the Django admin and the API.
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

CONTRACTOR = "contractor"
RESEARCHER = "researcher"
ADMIN = "admin"
ROLES = (CONTRACTOR, RESEARCHER, ADMIN)

# The apps whose models the roles get permissions on.
PROJECT_APPS = ("assistant", "collection", "training", "evals", "experiments")


def _codenames_for(role: str, permission) -> bool:
    """Whether `role`'s group holds `permission` (admins: everything; researchers: reading)."""
    app_label = permission.content_type.app_label
    if role == ADMIN:
        return app_label in PROJECT_APPS or app_label in {"auth", "django_celery_beat", "authtoken"}
    if role == RESEARCHER:
        return app_label in PROJECT_APPS and permission.codename.startswith("view_")
    return False  # contractors act only through their own pages, never on models at large


def ensure_role_groups(**kwargs) -> None:
    """Create the three role groups and give them their permissions; safe to run any time."""
    from django.contrib.auth.models import Group, Permission

    permissions = list(Permission.objects.select_related("content_type"))
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([p for p in permissions if _codenames_for(role, p)])


def user_roles(user) -> frozenset[str]:
    """The roles a user holds; superusers hold all three. Group roles are cached on the user."""
    if not user.is_authenticated:
        return frozenset()
    if user.is_superuser:
        return frozenset(ROLES)
    cached = getattr(user, "_alignlab_roles", None)  # also set by config.auth_backends
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        user._alignlab_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


def role_required(*roles: str):
    """Anonymous users go to the login page; signed-in users without one of `roles` get 403."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapper.allowed_roles = frozenset(roles)
        return wrapper

    return decorator


def roles_context(request) -> dict:
    """Template context: `roles`, so the navigation shows each user their own pages."""
    user = getattr(request, "user", None)
    return {"roles": user_roles(user) if user is not None else frozenset()}


class ResearcherReadAdminWrite:
    """DRF permission: researchers and admins read; only admins write; contractors get nothing.

    Contractors work through their own pages only, so the API never shows them anyone's data.
    """

    def has_permission(self, request, view) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return has_role(request.user, RESEARCHER, ADMIN)
        return has_role(request.user, ADMIN)

    def has_object_permission(self, request, view, obj) -> bool:
        return self.has_permission(request, view)


class ResearcherWrite(ResearcherReadAdminWrite):
    """DRF permission for derived, read-only artefacts (snapshots, eval runs): researchers too."""

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, RESEARCHER, ADMIN)
