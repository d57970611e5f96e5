from django.apps import AppConfig


class CollectionConfig(AppConfig):
    """Campaigns, conversations, comparisons and rankings, contractor quality, datasets."""

    name = "collection"
