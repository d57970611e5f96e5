from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConfigConfig(AppConfig):
    """The project itself as an app: roles, sign-in pages, platform management commands."""

    name = "config"
    verbose_name = "AlignLab"

    def ready(self):
        from .roles import ensure_role_groups

        # After every migrate, so permissions of newly added models join the roles.
        post_migrate.connect(ensure_role_groups, dispatch_uid="alignlab-ensure-role-groups")
