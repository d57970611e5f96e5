"""Campaigns on a model version row and ready turns whose responses are written, for the tests
of what contractors judge (nothing generates)."""

from collection.models import Campaign, Response, Turn


def make_campaign(lm, **fields):
    defaults = {"name": "Be helpful", "lm_version": lm, "max_turns": 3}
    return Campaign.objects.create(**{**defaults, **fields})


def ready_turn(conversation, texts=("Paris.", "Lyon."), *, finish=("stop", "stop"), lm=None):
    """The conversation's next turn with its responses written, ready to judge."""
    index = conversation.turns.count()
    turn = Turn.objects.create(
        conversation=conversation, index=index, human_text=f"question {index}", status="ready"
    )
    for i, text in enumerate(texts):
        Response.objects.create(
            turn=turn,
            index=i,
            text=text,
            finish_reason=finish[i] if i < len(finish) else "stop",
            model_version=lm or conversation.campaign.lm_version,
            latency_s=1.0,
        )
    return turn


def ids(turn):
    return list(turn.responses.order_by("index").values_list("pk", flat=True))
