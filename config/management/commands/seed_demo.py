"""Create one demo user per role and print their credentials (embedded/demo setups only)."""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from config.roles import ADMIN, CONTRACTOR, RESEARCHER, ensure_role_groups

DEMO_USERS = (
    ("alice", CONTRACTOR),
    ("bob", CONTRACTOR),
    ("rita", RESEARCHER),
    ("adam", ADMIN),
)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument(
            "--force", action="store_true", help="also when DEBUG is off (not for production)"
        )

    def handle(self, *args, force=False, **options):
        if not settings.DEBUG and not force:
            raise CommandError("demo users are for DEBUG setups; pass --force to create anyway")
        # Passwords are made once per var/ folder and kept there, so they stay the same
        # from one `make run` to the next.
        store = settings.VAR_DIR / "demo-users.json"
        passwords = json.loads(store.read_text()) if store.exists() else {}
        User = get_user_model()
        with transaction.atomic():
            ensure_role_groups()
            for username, role in DEMO_USERS:
                password = passwords.setdefault(username, secrets.token_urlsafe(9))
                user, _ = User.objects.get_or_create(username=username)
                user.set_password(password)
                user.is_staff = role == ADMIN
                user.save()
                user.groups.set([Group.objects.get(name=role)])
        store.write_text(json.dumps(passwords, indent=2))
        store.chmod(0o600)
        self.stdout.write("Demo users (username / password / role):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<6} {passwords[username]:<14} {role}")
