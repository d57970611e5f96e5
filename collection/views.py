"""Contractor pages: open campaigns, conversations with the model, judging, the review queue.

Every conversation or turn is looked up through a helper that enforces ownership (404 for
anyone else's), and every write goes through the actions of `collection.conversations`,
`collection.judgements` and `collection.gold`.
"""

import statistics
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.db.models import Count
from django.http import (
    Http404,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST
from django_htmx.http import push_url

from config.query_shapes import PK, QueryShape
from config.roles import ADMIN, CONTRACTOR, RESEARCHER, role_required

from . import conversations, exports, gold, judgements, selectors
from .dataset_errors import DatasetError
from .errors import CollectionError
from .export_jobs import stream_refusal
from .forms import GoldItemForm, JudgementForm, MessageForm, QualityFilterForm
from .models import (
    Campaign,
    Conversation,
    DatasetSnapshot,
    GoldAnswer,
    Judgement,
    Response,
    Turn,
)


def _get_conversation_for_user(request, conversation_id: int) -> Conversation:
    conversation = selectors.conversation_for_contractor(
        contractor=request.user, conversation_id=conversation_id
    )
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _get_turn_for_user(request, turn_id: int) -> Turn:
    return get_object_or_404(
        Turn.objects.select_related("conversation__campaign"),
        pk=turn_id,
        conversation__contractor=request.user,
        conversation__source=Conversation.Source.COLLECTED,
    )


def _judge(request, form: JudgementForm, turn: Turn, shown_at) -> bool:
    """Submit a valid judgement form; a refusal becomes a form error. True when recorded."""
    measured = form.cleaned_data.get("time_spent_ms")
    if measured is None:  # no JavaScript: the server's time since the form was shown
        elapsed = (timezone.now() - shown_at).total_seconds() if shown_at else 0
        measured = max(0, int(elapsed * 1000))
    try:
        judgements.judgement_submit(
            turn=turn,
            contractor=request.user,
            scale=form.cleaned_data.get("scale"),
            ranking=form.cleaned_data.get("order"),
            flags=form.cleaned_data["flags"],
            note=form.cleaned_data["note"],
            time_spent_ms=measured,
            tie=form.cleaned_data.get("tie", False),
            both_bad=form.cleaned_data["both_bad"],
        )
    except CollectionError as error:  # shown beside the field it names, else above the form
        form.add_error(error.field if error.field in form.fields else None, str(error))
        return False
    return True


# How long the model usually takes, shown while it writes: the median over its recent turns.
GENERATION_TURNS = 50  # turns the median is taken over
GENERATION_WINDOW = 5000  # the newest responses (of any model) searched for them


def usual_generation(campaign: Campaign) -> dict | None:
    """How long the campaign's LM took to write a turn's responses on this server: the median
    over its newest `GENERATION_TURNS` turns (a turn's time: its slowest response), as
    {"seconds", "turns", "text"}; None before it wrote any.

    Two queries on the primary key's index: the newest response id, then the responses of
    the LM among the newest `GENERATION_WINDOW` ids (a bounded range, whatever the table's
    size). Cached until the next response is written, so the page polling every second
    asks again only when there is something new.
    """
    if campaign.lm_version_id is None:
        return None
    newest = Response.objects.order_by("-pk").values_list("pk", flat=True).first()
    if newest is None:
        return None
    key = f"collection:usual-generation:{campaign.lm_version_id}:{newest}"
    found = cache.get(key)
    if found is not None:
        return found or None
    rows = (
        Response.objects.filter(
            pk__gt=newest - GENERATION_WINDOW,
            model_version_id=campaign.lm_version_id,
            latency_s__gt=0,  # gold items and imports were not generated
        )
        .order_by("-pk")
        .values_list("turn_id", "latency_s")
    )
    per_turn: dict[int, float] = {}
    for turn_id, latency in rows.iterator(chunk_size=1000):
        if turn_id not in per_turn and len(per_turn) == GENERATION_TURNS:
            break
        per_turn[turn_id] = max(per_turn.get(turn_id, 0.0), latency)
    found = {}
    if per_turn:
        seconds = statistics.median(per_turn.values())
        if seconds < 10:
            text = f"{seconds:.1f} seconds"
        elif seconds < 120:
            text = f"{seconds:.0f} seconds"
        else:
            text = f"{seconds / 60:.0f} minutes"
        found = {"seconds": seconds, "turns": len(per_turn), "text": text}
    cache.set(key, found, 300)
    return found or None


REVIEW_COUNT_SHOWN = 100  # the dashboard counts the review queue up to this, then "more than"


@role_required(CONTRACTOR)
def dashboard(request):
    """The contractor's start page: open campaigns, their conversations and counts."""
    times = list(
        Judgement.objects.filter(contractor=request.user).values_list("time_spent_ms", flat=True)
    )
    context = {
        # Campaigns without a model hold imported data: nobody can chat in them.
        "campaigns": [c for c in selectors.open_campaigns() if c.lm_version_id],
        "conversations": selectors.conversations_for_contractor(contractor=request.user)[:50],
        "judgement_count": len(times),
        "median_seconds": statistics.median(times) / 1000 if times else None,
        # Counted up to one past what is shown ("more than 100"), so it stays cheap.
        "review_count": selectors.review_queue_count(
            contractor=request.user, at_most=REVIEW_COUNT_SHOWN + 1
        ),
        "review_count_shown": REVIEW_COUNT_SHOWN,
    }
    return render(request, "collection/dashboard.html", context)


@role_required(CONTRACTOR)
@require_POST
def conversation_start(request, campaign_id: int):
    campaign = get_object_or_404(Campaign, pk=campaign_id, is_active=True, lm_version__isnull=False)
    try:
        conversation = conversations.conversation_start(campaign=campaign, contractor=request.user)
    except CollectionError as error:
        messages.error(request, str(error))
        return redirect("collection:dashboard")
    return redirect("collection:conversation", conversation.pk)


def _conversation_page(request, conversation, *, message_form=None, judge_form=None):
    turns = list(
        selectors.turns_with_responses(conversation=conversation).select_related("chosen_response")
    )
    current = turns[-1] if turns and turns[-1].status != Turn.Status.JUDGED else None
    campaign = conversation.campaign
    can_write = (
        conversation.status == Conversation.Status.OPEN
        and current is None
        and len(turns) < campaign.max_turns
    )
    if current is not None and current.status == Turn.Status.READY and judge_form is None:
        judge_form = JudgementForm(turn=current)
    waiting = current is not None and current.status in (Turn.Status.QUEUED, Turn.Status.GENERATING)
    context = {
        # The latest turn's judgement can be changed until the next message is sent.
        "revisable": turns[-1] if current is None and turns else None,
        "usual_generation": usual_generation(campaign) if waiting else None,
        "conversation": conversation,
        "campaign": campaign,
        "earlier": [t for t in turns if t is not current],
        "turn": current,
        "form": judge_form,
        # A refused message stays in its box, with the reason, whatever the page shows next.
        "message_form": message_form or (MessageForm(campaign=campaign) if can_write else None),
        "max_turns_reached": len(turns) >= campaign.max_turns and current is None,
    }
    return render(request, "collection/conversation.html", context)


@role_required(CONTRACTOR)
def conversation_detail(request, conversation_id: int):
    """The dialogue so far, the current turn (progress, error or judging form), the message box."""
    return _conversation_page(request, _get_conversation_for_user(request, conversation_id))


@role_required(CONTRACTOR)
@require_POST
def message_submit(request, conversation_id: int):
    conversation = _get_conversation_for_user(request, conversation_id)
    form = MessageForm(request.POST, campaign=conversation.campaign)
    if form.is_valid():
        try:
            conversations.turn_submit(
                conversation=conversation,
                contractor=request.user,
                text=form.cleaned_data["text"],
                judgement_type=form.cleaned_data.get("judgement_type", ""),
            )
        except CollectionError as error:
            form.add_error("text", str(error))
        else:
            return redirect("collection:conversation", conversation.pk)
    return _conversation_page(request, conversation, message_form=form)


@role_required(CONTRACTOR)
def conversation_end(request, conversation_id: int):
    """End a conversation once the contractor confirmed it: a GET, or a POST without
    `confirm=yes` (the conversation page's button), shows the question; the question's form
    posts `confirm=yes` and ends it. Works without JavaScript; nothing ends unconfirmed."""
    conversation = _get_conversation_for_user(request, conversation_id)
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    confirmed = request.method == "POST" and request.POST.get("confirm") == "yes"
    if not confirmed:
        if conversation.status != Conversation.Status.OPEN:
            messages.info(request, f"Conversation {conversation.pk} has already ended.")
            return redirect("collection:conversation", conversation.pk)
        context = {
            "conversation": conversation,
            "campaign": conversation.campaign,
            "turn_count": conversation.turns.count(),
        }
        return render(request, "collection/conversation_end.html", context)
    conversations.conversation_end(conversation=conversation, contractor=request.user)
    messages.success(request, f"Conversation {conversation.pk} ended. Thank you!")
    return redirect("collection:dashboard")


@role_required(CONTRACTOR)
def turn_detail(request, turn_id: int):
    """The current turn as an htmx fragment (polled while the model writes); else its page."""
    turn = _get_turn_for_user(request, turn_id)
    if not request.htmx:
        url = reverse("collection:conversation", args=[turn.conversation_id])
        return redirect(f"{url}#turn-{turn.pk}")
    form = JudgementForm(turn=turn) if turn.status == Turn.Status.READY else None
    campaign = turn.conversation.campaign
    waiting = turn.status in (Turn.Status.QUEUED, Turn.Status.GENERATING)
    # Its judgement can be changed while no next message followed it.
    later = Turn.objects.filter(conversation_id=turn.conversation_id, index__gt=turn.index)
    revisable = turn.status == Turn.Status.JUDGED and not later.exists()
    context = {
        "turn": turn,
        "form": form,
        "campaign": campaign,
        "usual_generation": usual_generation(campaign) if waiting else None,
        "revisable": turn if revisable else None,
    }
    return render(request, "collection/_turn.html", context)


@role_required(CONTRACTOR)
@require_POST
def turn_judge(request, turn_id: int):
    """Judge one's own turn; a second submit finds the first judgement (`judgement_submit`'s
    rule)."""
    turn = _get_turn_for_user(request, turn_id)
    form = JudgementForm(request.POST, turn=turn)
    if form.is_valid() and _judge(request, form, turn, shown_at=turn.ready_at):
        return redirect("collection:conversation", turn.conversation_id)
    return _conversation_page(request, turn.conversation, judge_form=form)


@role_required(CONTRACTOR)
def turn_revise(request, turn_id: int):
    """Change one's judgement of one's latest turn, until the next message is sent: the form,
    filled in with the judgement as it stands (GET), and the change (POST)."""
    turn = _get_turn_for_user(request, turn_id)
    judgement = Judgement.objects.filter(
        turn=turn, contractor=request.user, origin=Judgement.Origin.CONVERSATION
    ).first()
    if judgement is None:
        raise Http404("You have not judged this turn.")
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    form = JudgementForm(request.POST or None, turn=turn, judgement=judgement)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            judgements.judgement_revise(
                turn=turn,
                contractor=request.user,
                scale=form.cleaned_data.get("scale"),
                tie=form.cleaned_data.get("tie", False),
                ranking=form.cleaned_data.get("order"),
                both_bad=form.cleaned_data["both_bad"],
                flags=form.cleaned_data["flags"],
                note=form.cleaned_data["note"],
            )
        except CollectionError as error:
            form.add_error(error.field if error.field in form.fields else None, str(error))
            status = 409
        else:
            messages.success(request, "Your judgement is changed.")
            return redirect("collection:conversation", turn.conversation_id)
    earlier = (
        turn.conversation.turns.filter(index__lt=turn.index)
        .select_related("chosen_response")
        .order_by("index")
    )
    context = {
        "turn": turn,
        "campaign": turn.conversation.campaign,
        "conversation": turn.conversation,
        "earlier": earlier,
        "form": form,
        "judgement": judgement,
        # Said before the contractor tries: the service refuses it anyway.
        "too_late": turn.conversation.turns.filter(index__gt=turn.index).exists(),
    }
    return render(request, "collection/revise.html", context, status=status)


@role_required(CONTRACTOR)
@require_POST
def turn_retry(request, turn_id: int):
    """Ask the model again for a turn whose generation failed; the message is kept."""
    turn = _get_turn_for_user(request, turn_id)
    conversations.turn_retry(turn=turn, contractor=request.user)
    return redirect("collection:conversation", turn.conversation_id)


def _review_page(request, turn, form):
    earlier = (
        _EARLIER_TURNS.fetch(conversation=turn.conversation_id, index=turn.index)
        if turn.index
        else ()  # a conversation's first turn: nothing before it to ask for
    )
    context = {"turn": turn, "earlier": earlier, "form": form}
    return render(request, "collection/review.html", context)


# The turns before a reviewed one, on every review page: SQL written once (config.query_shapes).
_EARLIER_TURNS = QueryShape(
    lambda conversation, index: (
        Turn.objects.filter(conversation=conversation, index__lt=index)
        .select_related("chosen_response")
        .order_by("index")
    ),
    conversation=PK,
    index=PK,
)


@role_required(CONTRACTOR)
def review(request):
    """The next turn someone else wrote and judged, for a second judgement (gold items first)."""
    return _next_review_page(request)


def _next_review_page(request):
    """The review page with the next turn, held for this contractor (see `review`)."""
    turn = selectors.review_claim_next(contractor=request.user)
    if turn is None:
        return render(request, "collection/review.html", {"turn": None})
    if turn.review_claimed_by_id != request.user.pk:
        # An unheld turn (a gold item): when it was shown goes in the session; a held one's
        # hold says it, which saves a session write per page.
        request.session["review_shown"] = [turn.pk, timezone.now().isoformat()]
    return _review_page(request, turn, JudgementForm(turn=turn))


@role_required(CONTRACTOR)
@require_POST
def review_judge(request, turn_id: int):
    # Any turn this contractor may review, not only one still in the queue: when another
    # reviewer's judgement closed it meanwhile, the submit says so beside the form (not 404).
    # A double submit finds the first judgement, which `judgement_submit` returns unchanged.
    turn = selectors.reviewable_turn(contractor=request.user, turn_id=turn_id)
    if turn is None:
        raise Http404("No such turn to review.")
    form = JudgementForm(request.POST, turn=turn)
    boosted = request.htmx.boosted
    if form.is_valid() and _judge(request, form, turn, shown_at=_review_shown_at(request, turn)):
        messages.success(request, "Thank you: your judgement is recorded.")
        if not boosted:  # without JavaScript: the form posts and is redirected as usual
            return redirect("collection:review")
        # The page's form is boosted (htmx swaps the answer into the page): the next turn
        # comes in this answer, one request per judgement instead of a redirect and a second
        # request with its own session, user and role lookups.
        response = _next_review_page(request)
    else:
        response = _review_page(request, turn, form)
    # A boosted answer keeps the page's address (the queue's): this form's own URL takes
    # POSTs only, so a reload there would be refused.
    return push_url(response, False) if boosted else response


def _review_shown_at(request, turn):
    """When the review page showed this turn to this contractor: its hold's start, else what
    the session kept (None: not known, e.g. a submit from another tab)."""
    if turn.review_claimed_by_id == request.user.pk and turn.review_claimed_until:
        return turn.review_claimed_until - timedelta(seconds=settings.COLLECTION_REVIEW_CLAIM_S)
    shown_turn, shown_at = request.session.get("review_shown", [None, None])
    return parse_datetime(shown_at) if shown_turn == turn.pk else None


# --- Admins: gold items ---------------------------------------------------------------------


@role_required(ADMIN)
def gold_items(request):
    """Make a gold item (a message, the campaign's k responses, the best one); list recent ones."""
    form = GoldItemForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            gold.gold_item_create(
                campaign=data["campaign"],
                admin=request.user,
                human_text=data["human_text"],
                responses=data["response_list"],
                best_index=data["best"] - 1,
                explanation=data["explanation"],
            )
        except CollectionError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Gold item created: it leads every review queue.")
            return redirect("collection:gold")
    golds = (
        GoldAnswer.objects.select_related("turn__conversation__campaign", "best_response")
        .annotate(judged=Count("turn__judgements"))
        .order_by("-created_at")[:50]
    )
    return render(request, "collection/gold.html", {"form": form, "golds": golds})


# --- Researchers: dataset snapshots (the datasets page is in dataset_views) ---------------


@role_required(RESEARCHER, ADMIN)
def snapshot_download(request, snapshot_id: int):
    """Stream one export of a snapshot (constant memory, whatever its size)."""
    snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
    export = request.GET.get("export", "hh-rlhf")
    file_format = request.GET.get("file_format", "jsonl")
    split = request.GET.get("split", "all")
    try:
        refusal = stream_refusal(snapshot, export, split=split, pairs="all")
        blocks = exports.stream_export(snapshot, export, file_format, split=split)
    except DatasetError as error:
        return HttpResponseBadRequest(str(error))
    if refusal:
        return HttpResponseBadRequest(refusal)
    response = StreamingHttpResponse(blocks, content_type="application/octet-stream")
    name = f"snapshot-{snapshot.pk}-{export}-{split}.{file_format}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@role_required(RESEARCHER, ADMIN)
def quality(request):
    """Contractor quality and agreement: per contractor, and per campaign."""
    from .quality_summaries import quality_numbers

    form = QualityFilterForm(request.GET)
    valid = form.is_valid()
    if not valid:  # a campaign id that is not one: say so, and show all campaigns
        messages.error(request, f"Campaign: {' '.join(form.errors['campaign'])} Showing all.")
    campaign = form.cleaned_data["campaign"] if valid else None
    return render(
        request,
        "collection/quality.html",
        {
            "campaigns": Campaign.objects.exclude(imports__isnull=False).order_by("-pk"),
            "campaign": campaign,
            **quality_numbers(campaign),
        },
        status=200 if valid else 400,
    )
