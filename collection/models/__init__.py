"""The collection app's models, one module per concern; `from collection.models import X`
reaches every one of them (Django loads them from here)."""

from .campaigns import Campaign, ReviewOrder, SelectionRule
from .conversations import (
    FLAGS,
    SCALE_LABELS,
    Candidate,
    Conversation,
    GoldAnswer,
    Judgement,
    Response,
    Sample,
    Turn,
)
from .datasets import DatasetImport, DatasetSnapshot, ImportJob
from .exports import ExportJob, SnapshotJob
from .loop import LoopSettings, PMAgreement
from .quality import QualitySummary

__all__ = [
    "FLAGS",
    "SCALE_LABELS",
    "Campaign",
    "Candidate",
    "Conversation",
    "DatasetImport",
    "DatasetSnapshot",
    "ExportJob",
    "GoldAnswer",
    "ImportJob",
    "Judgement",
    "LoopSettings",
    "PMAgreement",
    "QualitySummary",
    "Response",
    "ReviewOrder",
    "Sample",
    "SelectionRule",
    "SnapshotJob",
    "Turn",
]
