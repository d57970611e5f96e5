from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from . import services
from .models import ModelVersion, PromptTemplate


@admin.register(PromptTemplate)
class PromptTemplateAdmin(admin.ModelAdmin):
    """Editing a prompt saves a new version; the old one stays as samples recorded it."""

    list_display = ("name", "version", "created_by", "created_at", "words")
    list_filter = ("name",)
    readonly_fields = ("version", "created_by", "created_at")
    fields = ("name", "version", "text", "notes", "created_by", "created_at")

    @admin.display(description="words")
    def words(self, obj):
        return len(obj.text.split())

    def save_model(self, request, obj, form, change):
        saved = services.prompt_template_create(
            name=obj.name, text=obj.text, notes=obj.notes, created_by=request.user
        )
        obj.pk, obj.version = saved.pk, saved.version
        if change:
            messages.info(request, f"Saved as a new version: {saved.key}.")

    def has_delete_permission(self, request, obj=None):
        return False  # samples refer to prompt versions


class ModelVersionForm(forms.ModelForm):
    """What the API checks, as form errors: paths inside the model roots, safe server URLs."""

    class Meta:
        model = ModelVersion
        fields = services.MODEL_VERSION_FIELDS  # the admin shows these, less its read-only ones

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        # An edit keeps a path registered by trusted code (training, register_model) as it is.
        confine = self.instance.pk is None or "path" in self.changed_data
        try:
            data["path"] = services.model_version_check(
                kind=data.get("kind"),
                backend=data.get("backend"),
                path=data.get("path", ""),
                url=data.get("url", ""),
                backend_options=data.get("backend_options"),
                generation_defaults=data.get("generation_defaults"),
                metadata=data.get("metadata"),
                confine_to_roots=confine,
            )
        except ValidationError as error:
            self.add_error(None, error)
        return data


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    form = ModelVersionForm
    list_display = ("id", "kind", "name", "backend", "origin", "is_active", "created_at")
    list_filter = ("kind", "backend", "origin", "is_active")
    search_fields = ("name", "path", "url")
    readonly_fields = ("is_active", "origin", "training_run_id", "created_at")
    actions = ["activate"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        fields = {name: getattr(obj, name) for name in services.MODEL_VERSION_FIELDS}
        saved = services.model_version_register(**fields, confine_to_roots=True)
        obj.pk = saved.pk

    @admin.action(description="Make active (one per kind)")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version.", messages.ERROR)
            return
        version = services.model_version_activate(version=queryset.get())
        self.message_user(request, f"{version} is now active.")
