"""Signals other apps listen to; the assistant sends them and imports none of the listeners."""

from django.dispatch import Signal

# Sent once a ModelVersion is committed to the database: `version` (the ModelVersion).
model_version_registered = Signal()
