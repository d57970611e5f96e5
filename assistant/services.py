"""Actions that change the assistant's state, each in one transaction."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from .backends import SamplingParams
from .models import ModelVersion, PromptTemplate
from .signals import model_version_registered

DEFAULT_LM_NAME = "SmolLM2-135M-Instruct"


def _check_generation_defaults(defaults: dict) -> None:
    try:
        SamplingParams(**{k: tuple(v) if k == "stop" else v for k, v in defaults.items()})
    except (TypeError, ValueError) as error:
        raise ValidationError({"generation_defaults": str(error)}) from None


def model_version_register(
    *,
    kind: str,
    name: str,
    backend: str = ModelVersion.Backend.TRANSFORMERS,
    path: str = "",
    url: str = "",
    remote_model: str = "",
    backend_options: dict | None = None,
    generation_defaults: dict | None = None,
    origin: str = ModelVersion.Origin.IMPORTED,
    training_run_id: int | None = None,
    metadata: dict | None = None,
    activate: bool = False,
) -> ModelVersion:
    """Add a model version; listeners of `model_version_registered` hear of it after commit."""
    if backend == ModelVersion.Backend.TRANSFORMERS:
        if not path or not Path(path).exists():
            raise ValidationError({"path": f"no model folder or file at {path!r}"})
        path = str(Path(path).resolve())
    if backend == ModelVersion.Backend.OPENAI and not url:
        raise ValidationError({"url": "an OpenAI-compatible backend needs the server's URL"})
    if kind == ModelVersion.Kind.PM and backend != ModelVersion.Backend.TRANSFORMERS:
        raise ValidationError({"backend": "preference models run locally (transformers)"})
    generation_defaults = generation_defaults or {}
    _check_generation_defaults(generation_defaults)
    with transaction.atomic():
        version = ModelVersion(
            kind=kind,
            name=name,
            backend=backend,
            path=path,
            url=url,
            remote_model=remote_model,
            backend_options=backend_options or {},
            generation_defaults=generation_defaults,
            origin=origin,
            training_run_id=training_run_id,
            metadata=metadata or {},
        )
        version.full_clean()
        version.save()
        if activate:
            model_version_activate(version=version)
        transaction.on_commit(
            lambda: model_version_registered.send(sender=ModelVersion, version=version)
        )
    return version


def model_version_activate(*, version: ModelVersion) -> ModelVersion:
    """Make `version` the active model of its kind (the one collection and reranking use)."""
    with transaction.atomic():
        # Lock the kind's rows so two activations can't both leave theirs active.
        list(ModelVersion.objects.select_for_update().filter(kind=version.kind))
        ModelVersion.objects.filter(kind=version.kind, is_active=True).exclude(
            pk=version.pk
        ).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    return version


def prompt_template_create(
    *, name: str, text: str, notes: str = "", created_by=None
) -> PromptTemplate:
    """Store `text` as the next version of prompt `name` (the same text makes no new version)."""
    if not text.strip():
        raise ValidationError(
            {"text": "a prompt needs text (use no prompt instead of an empty one)"}
        )
    with transaction.atomic():
        latest = (
            PromptTemplate.objects.select_for_update()
            .filter(name=name)
            .order_by("-version")
            .first()
        )
        if latest is not None and latest.text == text:
            return latest
        last = PromptTemplate.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0
        return PromptTemplate.objects.create(
            name=name, version=last + 1, text=text, notes=notes, created_by=created_by
        )


def default_lm_ensure() -> ModelVersion:
    """Convert the default LM from its PyPI package once, register it, and make it active if no
    language model is active yet. Safe to call on every start."""
    from .default_model import ensure_default_model

    folder = ensure_default_model(settings.MODELS_DIR)
    with transaction.atomic():
        version = ModelVersion.objects.filter(
            kind=ModelVersion.Kind.LM,
            origin=ModelVersion.Origin.DEFAULT,
            path=str(folder.resolve()),
        ).first()
        if version is None:
            version = model_version_register(
                kind=ModelVersion.Kind.LM,
                name=DEFAULT_LM_NAME,
                path=str(folder),
                origin=ModelVersion.Origin.DEFAULT,
                generation_defaults={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 160},
            )
        if not ModelVersion.objects.filter(kind=ModelVersion.Kind.LM, is_active=True).exists():
            model_version_activate(version=version)
    return version
