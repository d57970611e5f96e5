from django.apps import AppConfig


class AssistantConfig(AppConfig):
    """Everything that runs a model: LM backends, prompts, sampling, PM scoring, the registry."""

    name = "assistant"
