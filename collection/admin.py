"""The Django admin of collected data: campaigns are edited here; what contractors and the
model wrote is read-only (it changes only through the actions of `collection`)."""

from django.contrib import admin

from . import campaigns
from .models import (
    Campaign,
    Candidate,
    Conversation,
    DatasetImport,
    DatasetSnapshot,
    GoldAnswer,
    Judgement,
    LoopSettings,
    PMAgreement,
    Response,
    Turn,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        # Shown, never edited: listed as read-only, the inline's form needs no field for them
        # (a non-editable one such as `created_at` would otherwise make the page a 500).
        return self.fields


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "mode",
        "judgement_type",
        "k",
        "lm_version",
        "prompt",
        "max_turns",
        "overlap_target",
        "is_active",
        "created_at",
    )
    list_filter = ("is_active", "mode", "judgement_type", "lm_version")
    search_fields = ("name", "instructions")
    filter_horizontal = ("compare_versions",)

    def save_model(self, request, obj, form, change):
        # The same service as the API: full_clean(), and the review queue refreshed when the
        # overlap target changed.
        campaigns.campaign_save(campaign=obj)


class TurnInline(ReadOnlyInline):
    model = Turn
    fields = (
        "index",
        "human_text",
        "judgement_type",
        "status",
        "chosen_response",
        "created_at",
        "ready_at",
    )


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ("pk", "campaign", "contractor", "status", "source", "created_at", "ended_at")
    list_filter = ("status", "source", "campaign")
    search_fields = ("contractor__username",)
    inlines = [TurnInline]


class ResponseInline(ReadOnlyInline):
    model = Response
    fields = (
        "index",
        "text",
        "model_version",
        "condition",
        "completion_tokens",
        "finish_reason",
    )


class JudgementInline(ReadOnlyInline):
    model = Judgement
    fields = ("contractor", "origin", "submitted_ranking", "scale", "flags", "time_spent_ms")


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ("pk", "conversation", "index", "status", "created_at", "ready_at")
    list_filter = ("status", "conversation__campaign")
    search_fields = ("human_text",)
    inlines = [ResponseInline, JudgementInline]


@admin.register(Response)
class ResponseAdmin(ReadOnlyAdmin):
    list_display = ("pk", "turn", "index", "model_version", "completion_tokens", "finish_reason")
    list_filter = ("model_version", "finish_reason")


@admin.register(Judgement)
class JudgementAdmin(ReadOnlyAdmin):
    list_display = (
        "pk",
        "turn",
        "contractor",
        "origin",
        "scale",
        "strength",
        "time_spent_ms",
        "created_at",
    )
    list_filter = ("origin", "turn__conversation__campaign")
    search_fields = ("contractor__username", "note")


@admin.register(GoldAnswer)
class GoldAnswerAdmin(admin.ModelAdmin):
    # Gold items are made by `gold.gold_item_create`; here only the explanation is edited.
    list_display = ("turn", "best_response", "created_by", "created_at")
    readonly_fields = ("turn", "best_response", "created_by", "created_at")

    def has_add_permission(self, request):
        return False


@admin.register(DatasetImport)
class DatasetImportAdmin(ReadOnlyAdmin):
    list_display = ("pk", "format", "source_name", "campaign", "created_by", "created_at")
    list_filter = ("format",)


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("pk", "name", "content_hash", "created_by", "created_at")


@admin.register(LoopSettings)
class LoopSettingsAdmin(admin.ModelAdmin):
    """The drift alarm's window and margin (one row; see collection/pm_loop.py)."""

    list_display = ("pk", "drift_window", "drift_margin")

    def has_add_permission(self, request):
        return not LoopSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        LoopSettings.current()  # the row exists before anyone looks for it
        return super().changelist_view(request, extra_context)


@admin.register(PMAgreement)
class PMAgreementAdmin(ReadOnlyAdmin):
    list_display = ("judgement", "pm_version", "campaign", "contractor", "agrees", "margin")
    list_filter = ("agrees", "pm_version", "campaign")


@admin.register(Candidate)
class CandidateAdmin(ReadOnlyAdmin):
    list_display = ("pk", "turn", "pm_version", "pm_rank", "pm_score", "selection_rule")
