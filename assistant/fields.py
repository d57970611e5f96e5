"""Field declarations that every app repeats, written once.

Each gives the same fields its callers declared before, so the migrations see no change.
"""

from django.conf import settings
from django.db import models


def optional_fk(to, on_delete=models.PROTECT, *, related_name: str = "+", **options):
    """A reference that may be empty (null in the database, blank in forms).

    PROTECT by default: what a row points at (a model version, a prompt, a snapshot) is part of
    its record and may not vanish under it. `related_name="+"`: no reverse accessor unless named.
    """
    return models.ForeignKey(
        to, null=True, blank=True, on_delete=on_delete, related_name=related_name, **options
    )


def author_fk(on_delete=models.SET_NULL, **options):
    """The user who made or launched a row; by default the row outlives the account."""
    return optional_fk(settings.AUTH_USER_MODEL, on_delete, **options)


class Authored(models.Model):
    """A record someone made: who (kept empty once the account goes) and when, newest first."""

    created_by = author_fk()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
