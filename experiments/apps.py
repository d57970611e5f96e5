from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    """Experiments: grids of training runs and their evals, reported with intervals and verdicts."""

    name = "experiments"

    def ready(self):
        from assistant.jobs import job_finished

        from .services import on_job_finished

        # A training or eval run of a cell ended: advance its experiments (training and evals
        # never import experiments; they send the signal every job sends).
        job_finished.connect(on_job_finished, dispatch_uid="experiments-on-job-finished")
