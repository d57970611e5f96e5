from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from assistant.fields import author_fk


def validate_server_url(value: str) -> None:
    """An http(s) URL with a host; single-label hosts (gpu1, vllm) are fine on a private net."""
    try:
        parts = urlsplit(value)
    except ValueError:  # "http://[zz]/": an IPv6 host that is not one
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{value!r} is not an http(s) URL such as http://gpu1:8000/v1")


class PromptTemplate(models.Model):
    """One immutable version of a prompt (e.g. `hhh@1`); editing makes a new version.

    Samples point at the version they were generated with; "no prompt" is a null reference.
    """

    name = models.SlugField(max_length=64)
    version = models.PositiveIntegerField()
    text = models.TextField()
    notes = models.TextField(blank=True, help_text="What changed in this version and why.")
    created_by = author_fk()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="prompt_name_version_unique")
        ]
        ordering = ["name", "-version"]

    def __str__(self):
        return self.key

    def save(self, *args, **kwargs):
        if self.pk is not None:
            stored = (
                PromptTemplate.objects.filter(pk=self.pk).values_list("text", flat=True).first()
            )
            if stored is not None and stored != self.text:
                raise ValidationError("a prompt version never changes: create a new version")
        super().save(*args, **kwargs)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


class ModelVersion(models.Model):
    """A language model or preference model the platform can run; at most one active per kind."""

    class Kind(models.TextChoices):
        LM = "lm", "language model"
        PM = "pm", "preference model"

    class Backend(models.TextChoices):
        TRANSFORMERS = "transformers", "local transformers (folder or .gguf)"
        OPENAI = "openai", "OpenAI-compatible server"

    class Origin(models.TextChoices):
        IMPORTED = "imported"
        DEFAULT = "default", "default model from PyPI"
        TRAINED = "trained"

    kind = models.CharField(max_length=2, choices=Kind.choices)
    name = models.CharField(max_length=120)
    backend = models.CharField(max_length=20, choices=Backend.choices, default=Backend.TRANSFORMERS)
    path = models.CharField(max_length=500, blank=True, help_text="Local folder or .gguf file.")
    url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_server_url],
        help_text="Base URL of an OpenAI-compatible server (…/v1).",
    )
    remote_model = models.CharField(
        max_length=200, blank=True, help_text="Model name on that server."
    )
    backend_options = models.JSONField(
        default=dict,
        blank=True,
        help_text='Passed to the backend, e.g. {"mode": "completion", "dtype": "float32"}.',
    )
    generation_defaults = models.JSONField(
        default=dict, blank=True, help_text='Sampling parameters, e.g. {"temperature": 0.8}.'
    )
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.IMPORTED)
    # An id, not a foreign key: the assistant app imports no other app (training owns the runs).
    training_run_id = models.PositiveBigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(is_active=True), name="one_active_model_per_kind"
            ),
            models.CheckConstraint(
                condition=~Q(backend="openai") | ~Q(url=""), name="openai_backend_has_url"
            ),
            models.CheckConstraint(
                condition=~Q(backend="transformers") | ~Q(path=""), name="local_backend_has_path"
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk} {self.name}"
