"""Researchers' dataset pages: imports uploaded from the browser, snapshots made with a form,
exports, and a browser of the collected conversations with their judgements.

Researchers and admins only (contractors get 403). Writes go through `collection.imports`
(upload → ImportJob → worker) and `collection.snapshot_jobs.snapshot_request` (a snapshot
made in the request, or by a worker above a size).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import (
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    TextField,
)
from django.db.models.functions import Cast
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from config.roles import ADMIN, RESEARCHER, role_required

from . import imports
from .dataset_errors import DatasetError
from .dataset_forms import (
    ConversationFilterForm,
    ExportJobForm,
    ImportUploadForm,
    SnapshotBuildForm,
)
from .export_jobs import export_streamable
from .exports import EXPORT_FORMATS
from .models import (
    SCALE_LABELS,
    Campaign,
    Conversation,
    DatasetImport,
    DatasetSnapshot,
    ExportJob,
    ImportJob,
    Judgement,
    Response,
    SnapshotJob,
    Turn,
)
from .selectors import responses_in_order
from .snapshot_jobs import snapshot_request

PAGE_SIZE = 25


def counts_text(counts: dict) -> str:
    """An import's counts as words: "judgements: 2,312 · lines: 2,312 · skipped empty: 3"."""
    first = [key for key in ("judgements", "conversations", "lines") if key in counts]
    keys = first + sorted(key for key in counts if key not in first)
    return " · ".join(
        f"{key.replace('_', ' ')}: {counts[key]:,}"
        if isinstance(counts[key], int)
        else f"{key.replace('_', ' ')}: {counts[key]}"
        for key in keys
    )


def _datasets_page(request, *, snapshot_form=None, upload_form=None, upload_refusal="", status=200):
    recent_imports = list(DatasetImport.objects.select_related("campaign")[:50])
    for item in recent_imports:
        item.counts_text = counts_text(item.counts)
    snapshots = list(DatasetSnapshot.objects.select_related("created_by")[:50])
    for snapshot in snapshots:
        snapshot.streamable = export_streamable(snapshot)
    return render(
        request,
        "collection/datasets.html",
        {
            "form": snapshot_form or SnapshotBuildForm(),
            "upload_form": upload_form or ImportUploadForm(),
            "upload_refusal": upload_refusal,
            "upload_max_mb": imports.upload_max_bytes() // 2**20,
            "jobs": ImportJob.objects.select_related("dataset_import__campaign", "launched_by")[
                :10
            ],
            "snapshots": snapshots,
            "exports": EXPORT_FORMATS,
            "export_form": ExportJobForm(),
            "export_jobs": ExportJob.objects.select_related("launched_by")[:10],
            "snapshot_jobs": SnapshotJob.objects.select_related("launched_by")[:10],
            "snapshot_inline_max": settings.COLLECTION_SNAPSHOT_INLINE_MAX,
            "imports": recent_imports,
        },
        status=status,
    )


@role_required(RESEARCHER, ADMIN)
def datasets(request):
    """Snapshots: make one with the filter form, download its exports; uploads; imports."""
    if request.method != "POST":
        return _datasets_page(request)
    form = SnapshotBuildForm(request.POST)
    if form.is_valid():
        try:
            snapshot, job, new = snapshot_request(
                filter=form.filter_dict(), name=form.cleaned_data["name"], user=request.user
            )
        except DatasetError as error:
            form.add_error(form.field_for_error(str(error)), str(error))
        else:
            if job is not None:
                messages.success(
                    request,
                    f"{job.judgements:,} judgements: a worker makes this snapshot now."
                    if new
                    else "This snapshot is being made already: here it is.",
                )
                return redirect("collection:snapshot_job", job.pk)
            label = snapshot.name or f"snapshot {snapshot.pk}"
            messages.success(
                request, f"Made “{label}”: {snapshot.counts.get('judgements')} judgements."
            )
            return redirect("collection:datasets")
    return _datasets_page(request, snapshot_form=form, status=400)


@csrf_exempt  # checked below, once the size is known: reading the token reads the whole body
@role_required(RESEARCHER, ADMIN)
def import_upload(request):
    """Upload an import file; a worker imports it (the job's page shows how it goes)."""
    if request.method != "POST":
        return redirect("collection:datasets")
    try:
        claimed = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        claimed = 0
    if claimed > imports.upload_max_bytes() + 2**20:  # refused before a byte is stored
        refusal = (
            f"The upload is {claimed / 2**20:.0f} MiB; the limit is "
            f"{imports.upload_max_bytes() // 2**20} MiB (ALIGNLAB_UPLOAD_MAX_MB). Import "
            "bigger files with `manage.py import_dataset`."
        )
        return _datasets_page(request, upload_refusal=refusal, status=413)
    return _import_upload(request)


@csrf_protect
def _import_upload(request):
    form = ImportUploadForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            job = imports.import_job_create(
                upload=form.cleaned_data["file"],
                format=form.cleaned_data["format"],
                mode=form.cleaned_data["mode"],
                user=request.user,
            )
        except imports.ImportUploadError as error:
            form.add_error(error.field if error.field in form.fields else None, str(error))
        else:
            messages.success(request, f"{job.source_name} uploaded; a worker imports it now.")
            return redirect("collection:import_job", job.pk)
    return _datasets_page(request, upload_form=form, status=400)


@role_required(RESEARCHER, ADMIN)
def import_job(request, job_id: int):
    """An upload's import: progress while it runs, the line-numbered error, or the import."""
    job = get_object_or_404(
        ImportJob.objects.select_related("dataset_import__campaign", "launched_by"), pk=job_id
    )
    template = "collection/_import_job.html" if request.htmx else "collection/import_job.html"
    return render(request, template, {"job": job})


@role_required(RESEARCHER, ADMIN)
def snapshot_job(request, job_id: int):
    """A snapshot a worker makes: progress while it runs, its error, or the snapshot."""
    job = get_object_or_404(
        SnapshotJob.objects.select_related("snapshot", "launched_by"), pk=job_id
    )
    template = "collection/_snapshot_job.html" if request.htmx else "collection/snapshot_job.html"
    return render(request, template, {"job": job})


# --- The conversation browser -----------------------------------------------------------------


def _flagged(flag: str):
    """Conversations with a judgement carrying `flag` (flags are a JSON list: matched as the
    quoted name in its text, on SQLite and PostgreSQL alike)."""
    judgements = Judgement.objects.filter(turn__conversation=OuterRef("pk")).annotate(
        flags_text=Cast("flags", TextField())
    )
    return Exists(judgements.filter(flags_text__contains=f'"{flag}"'))


def _several_judged():
    return Exists(Turn.objects.filter(conversation=OuterRef("pk"), judgement_count__gte=2))


def _disagreeing():
    """Conversations with a turn whose judgements do not share one top choice."""
    per_turn = (
        Judgement.objects.filter(turn__conversation=OuterRef("pk"))
        .order_by()
        .values("turn")
        .annotate(n=Count("pk"), tops=Count("ranking__0", distinct=True))
        .filter(n__gte=2, tops__gte=2)
    )
    return Exists(per_turn)


def browse_queryset(data: dict):
    """The conversations the browser's (clean) filters select, newest first, with what a row
    shows computed per row by the database (never a Python loop over all rows)."""
    conversations = Conversation.objects.filter(
        source=data.get("source") or Conversation.Source.COLLECTED
    )
    if data.get("campaign"):
        conversations = conversations.filter(campaign=data["campaign"])
    if data.get("contractor"):
        conversations = conversations.filter(contractor=data["contractor"])
    if data.get("flag"):
        conversations = conversations.filter(_flagged(data["flag"]))
    agreement = data.get("agreement")
    if agreement == "overlap":
        conversations = conversations.filter(_several_judged())
    elif agreement == "agree":
        conversations = conversations.filter(_several_judged()).exclude(_disagreeing())
    elif agreement == "disagree":
        conversations = conversations.filter(_disagreeing())
    words = (data.get("q") or "").strip()
    if words:
        in_turns = Turn.objects.filter(conversation=OuterRef("pk"), human_text__icontains=words)
        in_responses = Response.objects.filter(
            turn__conversation=OuterRef("pk"), text__icontains=words
        )
        conversations = conversations.filter(
            Exists(in_turns) | Exists(in_responses) | Q(contractor__username__iexact=words)
        )

    def count(model, **path):
        rows = model.objects.filter(**path).order_by().values(*path).annotate(n=Count("pk"))
        return Subquery(rows.values("n")[:1], output_field=IntegerField())

    first = Turn.objects.filter(conversation=OuterRef("pk"), index=0).values("human_text")[:1]
    return (
        conversations.select_related("campaign", "contractor")
        .annotate(
            turn_count=count(Turn, conversation=OuterRef("pk")),
            judged_count=count(Judgement, turn__conversation=OuterRef("pk")),
            first_message=Subquery(first),
        )
        .order_by("-pk")
    )


@role_required(RESEARCHER, ADMIN)
def conversation_browse(request):
    """Every collected conversation, filtered and searched, a page at a time."""
    form = ConversationFilterForm(request.GET)
    valid = form.is_valid()
    data = form.cleaned_data if valid else {}
    page = Paginator(browse_queryset(data), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "collection/conversation_browse.html",
        {"form": form, "page": page, "query": query.urlencode()},
        status=200 if valid else 400,
    )


def _scale_label(campaign: Campaign, scale: int | None) -> str:
    if scale is None:
        return ""
    label = SCALE_LABELS.get(scale, str(scale))
    if campaign.mode == Campaign.Mode.RED_TEAM:
        label = label.replace("better", "more harmful")
    return f"{scale}: {label}"


def _judgement_row(campaign: Campaign, judgement: Judgement, letters: dict) -> dict:
    """A judgement as the read-only view shows it: "A > B" for a preference, "A = B (about
    the same)" for a tie (stored in display order, which is no preference)."""
    if judgement.tie:
        same = "about as harmful" if campaign.mode == Campaign.Mode.RED_TEAM else "about the same"
        ranking = " = ".join(letters.get(r, "?") for r in judgement.ranking) + f" ({same})"
        submitted = ranking
    else:
        ranking = " > ".join(letters.get(r, "?") for r in judgement.ranking)
        submitted = " > ".join(letters.get(r, "?") for r in judgement.submitted_ranking)
    return {
        "judgement": judgement,
        "ranking": ranking,
        "submitted": submitted,
        "scale": _scale_label(campaign, judgement.scale),
    }


@role_required(RESEARCHER, ADMIN)
def conversation_read(request, conversation_id: int):
    """One conversation, read-only: every turn, its responses and all its judgements."""
    conversation = get_object_or_404(
        Conversation.objects.select_related("campaign", "contractor", "dataset_import"),
        pk=conversation_id,
    )
    turns = list(
        conversation.turns.order_by("index")
        .select_related("gold")
        .prefetch_related(
            responses_in_order(),
            Prefetch(
                "judgements",
                queryset=Judgement.objects.select_related("contractor").order_by("created_at"),
            ),
        )
    )
    rows = []
    for turn in turns:
        letters = {response.pk: response.letter for response in turn.responses.all()}
        gold = getattr(turn, "gold", None)
        rows.append(
            {
                "turn": turn,
                "gold_letter": letters.get(gold.best_response_id) if gold else None,
                "judgements": [
                    _judgement_row(conversation.campaign, judgement, letters)
                    for judgement in turn.judgements.all()
                ],
            }
        )
    return render(
        request,
        "collection/conversation_browse_detail.html",
        {"conversation": conversation, "rows": rows},
    )
