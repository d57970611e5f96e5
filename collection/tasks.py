"""Collection tasks: thin, idempotent, they call services."""

from celery import shared_task

from . import services


@shared_task(name="collection.generate_responses", acks_late=True)
def generate_responses(turn_id: int) -> str:
    """Sample the k responses of a queued turn (runs on the `generation` queue)."""
    turn = services.turn_generate(turn_id=turn_id)
    return "skipped: already claimed" if turn is None else turn.status
