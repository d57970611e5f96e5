from django.apps import AppConfig


class CollectionConfig(AppConfig):
    """Campaigns, conversations, comparisons and rankings, contractor quality, datasets."""

    name = "collection"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from . import selectors
        from .models import Campaign

        for signal in (post_save, post_delete):
            signal.connect(
                selectors.uncertainty_campaigns_forget,
                sender=Campaign,
                dispatch_uid=f"collection.uncertainty_campaigns.{signal is post_save}",
            )
