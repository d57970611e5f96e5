from django.apps import AppConfig


class EvalsConfig(AppConfig):
    """Evaluation suites, eval runs and their reports."""

    name = "evals"
