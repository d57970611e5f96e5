"""Store our HHH prompt (assistant/prompts/hhh_v1.txt) as prompt `hhh`, version 1."""

from pathlib import Path

from django.db import migrations

PROMPT_FILE = Path(__file__).resolve().parents[1] / "prompts" / "hhh_v1.txt"


def add_hhh_prompt(apps, schema_editor):
    PromptTemplate = apps.get_model("assistant", "PromptTemplate")
    PromptTemplate.objects.get_or_create(
        name="hhh",
        version=1,
        defaults={
            "text": PROMPT_FILE.read_text(),
            "notes": "Our own HHH prompt: a preamble and example dialogues in the paper's format.",
        },
    )


def remove_hhh_prompt(apps, schema_editor):
    apps.get_model("assistant", "PromptTemplate").objects.filter(name="hhh", version=1).delete()


class Migration(migrations.Migration):
    dependencies = [("assistant", "0001_model_registry_and_prompts")]
    operations = [migrations.RunPython(add_hhh_prompt, remove_hhh_prompt)]
