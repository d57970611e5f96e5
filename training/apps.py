from django.apps import AppConfig


class TrainingConfig(AppConfig):
    """Training runs as Celery jobs: preference models, PMP, distillation, retraining."""

    name = "training"
