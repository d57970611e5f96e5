from django.apps import AppConfig


class EvalsConfig(AppConfig):
    """Evaluation suites, eval runs and their reports."""

    name = "evals"

    def ready(self):
        from assistant.signals import model_version_registered

        from .services import eval_runs_for_new_version

        # Every newly registered model version gets its suites (evals listens; the assistant
        # never imports evals).
        model_version_registered.connect(
            eval_runs_for_new_version, dispatch_uid="evals-on-model-registered"
        )
