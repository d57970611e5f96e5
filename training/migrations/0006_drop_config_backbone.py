"""Drop `backbone` from stored run configs: PreferenceTrainingConfig no longer has it.

Nothing ever read it (a run starts from its `base_model`), and `from_dict` refuses keys the
dataclass does not have, so a run stored with it could no longer be executed or resumed.
"""

from django.db import migrations


def drop_backbone(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    for run in TrainingRun.objects.only("config").iterator():
        if isinstance(run.config, dict) and "backbone" in run.config:
            run.config.pop("backbone")
            run.save(update_fields=["config"])


class Migration(migrations.Migration):
    dependencies = [("training", "0005_periodic_sweeper_schedule")]

    operations = [migrations.RunPython(drop_backbone, migrations.RunPython.noop)]
