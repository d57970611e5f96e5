"""Read queries of the assistant app."""

from .models import ModelVersion, PromptTemplate


def active_model(*, kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, is_active=True).first()


def prompt_latest(*, name: str) -> PromptTemplate | None:
    return PromptTemplate.objects.filter(name=name).order_by("-version").first()


def model_versions(*, kind: str | None = None):
    versions = ModelVersion.objects.all()
    return versions.filter(kind=kind) if kind else versions
