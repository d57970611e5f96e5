from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConfigConfig(AppConfig):
    """The project itself as an app: roles, sign-in pages, platform management commands."""

    name = "config"
    verbose_name = "AlignLab"

    def ready(self):
        from django.db.backends.signals import connection_created

        from . import dbtext
        from .roles import ensure_role_groups

        # Every database connection cleans the text it writes (NUL, lone surrogates): dbtext.
        connection_created.connect(dbtext.install, dispatch_uid="alignlab-dbtext-guard")

        # After every migrate, so permissions of newly added models join the roles.
        post_migrate.connect(ensure_role_groups, dispatch_uid="alignlab-ensure-role-groups")
