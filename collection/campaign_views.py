"""Admins' campaign pages: the list, a short create/edit form, pause/resume/close, progress.

Writes go through `collection.campaigns`: `campaign_create` / `campaign_update` (the API's
path) and pause, resume, close; every view is for admins only.
"""

from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from config.roles import ADMIN, role_required

from . import campaigns as campaign_services
from .campaign_forms import ADVANCED_FIELDS, LOOP_FIELDS, CampaignForm
from .errors import CollectionError
from .models import Campaign, Conversation


def _campaign(campaign_id: int) -> Campaign:
    return get_object_or_404(
        Campaign.objects.select_related("lm_version", "prompt", "created_by"), pk=campaign_id
    )


@role_required(ADMIN)
def campaign_list(request):
    """Every campaign with its status and counts (imported-data campaigns last, separately)."""
    campaigns = (
        Campaign.objects.select_related("lm_version", "prompt")
        # A count per campaign row (an index-only scan of conversation_source_campaign each),
        # not a join of every conversation grouped by campaign (a scan of them all).
        .annotate(
            conversation_count=Coalesce(
                Subquery(
                    Conversation.objects.filter(
                        campaign=OuterRef("pk"), source=Conversation.Source.COLLECTED
                    )
                    .order_by()
                    .values("campaign")
                    .annotate(n=Count("*"))
                    .values("n")
                ),
                0,
            ),
        )
        .order_by("-created_at", "-pk")
    )
    rows = [
        {"campaign": c, "status": campaign_services.campaign_status(c)}
        for c in campaigns.filter(lm_version__isnull=False)
    ]
    imported = campaigns.filter(lm_version__isnull=True).count()
    return render(request, "collection/campaigns.html", {"rows": rows, "imported_count": imported})


def _apply_service_errors(form: CampaignForm, error: ValidationError) -> None:
    """The service's refusal beside the field it names (else above the form)."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for field, messages_ in error.message_dict.items():
        target = field if field in form.fields and field != NON_FIELD_ERRORS else None
        if field == "is_active":
            target = None
        for message in messages_:
            form.add_error(target, message)


def _save(form: CampaignForm, *, campaign: Campaign | None, user) -> Campaign | None:
    """Create or change the campaign in one transaction; None (with the form's errors) when
    the service refused it."""
    fields = form.campaign_fields()
    versions = fields.pop("compare_versions")
    try:
        with transaction.atomic():
            if campaign is None:
                campaign = campaign_services.campaign_create(created_by=user, **fields)
            else:
                campaign = campaign_services.campaign_update(campaign=campaign, **fields)
            campaign.compare_versions.set(versions)
    except ValidationError as error:
        _apply_service_errors(form, error)
        return None
    return campaign


def _form_page(request, form, campaign=None, status=200):
    # The advanced settings open when one of them is refused or the campaign uses them.
    advanced_open = any(form[name].errors for name in ADVANCED_FIELDS) or bool(
        campaign is not None
        and (campaign.sampling or campaign.sampling_variants or campaign.compare_versions.exists())
    )
    loop_open = any(form[name].errors for name in LOOP_FIELDS) or bool(
        campaign is not None
        and (campaign.best_of_n or campaign.pm_version_id or campaign.review_order != "oldest")
    )
    return render(
        request,
        "collection/campaign_form.html",
        {
            "form": form,
            "campaign": campaign,
            "advanced_open": advanced_open,
            "loop_open": loop_open,
        },
        status=status,
    )


@role_required(ADMIN)
def campaign_new(request):
    if request.method == "POST":
        form = CampaignForm(request.POST)
        if form.is_valid():
            campaign = _save(form, campaign=None, user=request.user)
            if campaign is not None:
                messages.success(request, f"Campaign “{campaign.name}” created; it is active.")
                return redirect("collection:campaign", campaign.pk)
        return _form_page(request, form, status=400)
    return _form_page(request, CampaignForm(initial=campaign_services.campaign_defaults()))


@role_required(ADMIN)
def campaign_edit(request, campaign_id: int):
    campaign = _campaign(campaign_id)
    if campaign.lm_version_id is None:
        messages.error(request, "This campaign holds imported data; it has no settings to edit.")
        return redirect("collection:campaign", campaign.pk)
    if request.method == "POST":
        form = CampaignForm.for_campaign(campaign, request.POST)
        if form.is_valid():
            saved = _save(form, campaign=campaign, user=request.user)
            if saved is not None:
                messages.success(request, f"Campaign “{saved.name}” saved.")
                return redirect("collection:campaign", saved.pk)
            campaign.refresh_from_db()  # the refused values must not show as saved
        return _form_page(request, form, campaign, status=400)
    return _form_page(request, CampaignForm.for_campaign(campaign), campaign)


@role_required(ADMIN)
def campaign_detail(request, campaign_id: int):
    """The campaign's settings and progress: judgements per day, per contractor, totals."""
    campaign = _campaign(campaign_id)
    return render(
        request,
        "collection/campaign_detail.html",
        {
            "campaign": campaign,
            "status": campaign_services.campaign_status(campaign),
            "progress": campaign_services.campaign_progress(campaign=campaign),
            "compare_versions": list(campaign.compare_versions.all()),
        },
    )


def _state_change(request, campaign_id: int, change, done: str):
    campaign = _campaign(campaign_id)
    try:
        campaign = change(campaign=campaign)
    except CollectionError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Campaign “{campaign.name}” {done}.")
    return redirect("collection:campaign", campaign.pk)


@role_required(ADMIN)
@require_POST
def campaign_pause(request, campaign_id: int):
    return _state_change(request, campaign_id, campaign_services.campaign_pause, "paused")


@role_required(ADMIN)
@require_POST
def campaign_resume(request, campaign_id: int):
    return _state_change(request, campaign_id, campaign_services.campaign_resume, "resumed")


@role_required(ADMIN)
def campaign_close(request, campaign_id: int):
    """GET: ask once (closing is for good); POST with `confirm`: close it."""
    campaign = _campaign(campaign_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        return _state_change(request, campaign_id, campaign_services.campaign_close, "closed")
    return render(
        request,
        "collection/campaign_close.html",
        {
            "campaign": campaign,
            "status": campaign_services.campaign_status(campaign),
            "open_conversations": campaign.conversations.filter(
                status=Conversation.Status.OPEN, source=Conversation.Source.COLLECTED
            ).count(),
        },
        status=400 if request.method == "POST" else 200,
    )
