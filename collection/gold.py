"""Gold items: admin-made turns with fixed responses and a known best one, judged from the
review queue to measure each contractor's accuracy (`collection.quality` reads them)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .errors import CollectionError
from .models import Campaign, Conversation, GoldAnswer, Response, Turn


def gold_item_create(
    *,
    campaign: Campaign,
    admin,
    human_text: str,
    responses: list[str],
    best_index: int,
    explanation: str = "",
) -> Turn:
    """Make a gold item: a turn with fixed responses and a known best one, for the review queue."""
    kinds = Campaign.JudgementType
    judgement_type = ""
    if campaign.judgement_type == kinds.MIXED:  # a pair is judged pairwise, k are ranked
        if len(responses) not in (2, campaign.k):
            raise CollectionError(
                f"This campaign judges 2 responses (pairwise) or {campaign.k} (ranking); give "
                "either."
            )
        judgement_type = kinds.PAIRWISE if len(responses) == 2 else kinds.RANKING
    elif len(responses) != campaign.k:
        raise CollectionError(
            f"This campaign offers k = {campaign.k} responses; give {campaign.k}."
        )
    if not 0 <= best_index < len(responses):
        raise CollectionError("The best response must be one of the responses.")
    if not human_text.strip() or not all(text.strip() for text in responses):
        raise CollectionError("A gold item needs a message and non-empty responses.")
    with transaction.atomic():
        conversation = Conversation.objects.create(
            campaign=campaign,
            contractor=admin,
            source=Conversation.Source.GOLD,
            status=Conversation.Status.ENDED,
            ended_at=timezone.now(),
        )
        turn = Turn.objects.create(
            conversation=conversation,
            index=0,
            human_text=human_text.strip(),
            status=Turn.Status.JUDGED,
            ready_at=timezone.now(),
            judgement_type=judgement_type,
        )
        created = Response.objects.bulk_create(
            [
                Response(
                    turn=turn,
                    index=i,
                    text=text.strip(),
                    model_version=campaign.lm_version,
                    prompt=campaign.prompt,
                )
                for i, text in enumerate(responses)
            ]
        )
        GoldAnswer.objects.create(
            turn=turn, best_response=created[best_index], explanation=explanation, created_by=admin
        )
    return turn
