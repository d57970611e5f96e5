"""Set up the demo (embedded/demo setups only): one user per role with their credentials
printed, an open campaign on the active language model for the contractors, and the shipped
HH-RLHF harmless-base test file imported and snapshotted for the researcher. Safe to run on every
start: what exists already is kept."""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from collection.imports import SHIPPED_HH_RLHF
from config.roles import ADMIN, CONTRACTOR, RESEARCHER, ensure_role_groups

# The demo / test dataset that ships with collection (see its SOURCE.txt).
DEMO_DATASET = SHIPPED_HH_RLHF
DEMO_CAMPAIGN = "Demo: a helpful chat"
DEMO_SNAPSHOT = "Demo: HH-RLHF harmless-base test"
DEMO_INSTRUCTIONS = (
    "Chat with the assistant about anything you like. At each turn it offers two responses: "
    "say which one is more helpful, honest and harmless, and how strongly (1 = A much better, "
    "8 = B much better). The conversation goes on with the one you chose."
)

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
        self.stdout.write(self._campaign())
        self.stdout.write(self._dataset(User.objects.get(username="rita")))
        self.stdout.write("Demo users (username / password / role):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<6} {passwords[username]:<14} {role}")

    def _campaign(self) -> str:
        """An open campaign on the active LM and the latest HHH prompt, k = 2, pairwise."""
        from assistant.models import ModelVersion
        from assistant.selectors import active_model, prompt_latest
        from collection.models import Campaign

        campaign = Campaign.objects.filter(name=DEMO_CAMPAIGN).first()
        if campaign is None:
            lm = active_model(kind=ModelVersion.Kind.LM)
            if lm is None:
                return "Demo campaign: none (no active language model; run prepare_default_model)"
            campaign = Campaign(
                name=DEMO_CAMPAIGN,
                instructions=DEMO_INSTRUCTIONS,
                lm_version=lm,
                prompt=prompt_latest(name="hhh"),
                k=2,
                judgement_type=Campaign.JudgementType.PAIRWISE,
            )
            campaign.full_clean()
            campaign.save()
        return f"Demo campaign: {campaign.name!r} on {campaign.lm_version}"

    def _dataset(self, researcher) -> str:
        """The shipped HH-RLHF file imported (idempotent by its hash) and one snapshot of it."""
        from collection.imports import dataset_import_create
        from collection.models import DatasetSnapshot
        from collection.snapshots import snapshot_create

        imported = dataset_import_create(path=DEMO_DATASET, format="hh-rlhf", created_by=researcher)
        snapshot = DatasetSnapshot.objects.filter(name=DEMO_SNAPSHOT).first()
        if snapshot is None:
            snapshot = snapshot_create(
                filter={"imports": [imported.pk]}, created_by=researcher, name=DEMO_SNAPSHOT
            )
        return (
            f"Demo dataset: import {imported.pk} ({imported.counts.get('judgements')} judgements), "
            f"snapshot {snapshot.pk} {snapshot.content_hash[:12]}"
        )
