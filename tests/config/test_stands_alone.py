"""A clone with nothing beside it: no `../shared`, no data folder given. It still evaluates.

What every user outside this team has. The clone is made with `git clone`, so only committed,
tracked files are in it: a data file left out of git, or a default path pointing outside the
repository, fails here.
"""

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

# Runs inside the clone, on its own SQLite database: a tiny PM (its tokenizer trained on the
# clone's own data) evaluated by the HHH suite on the shipped items.
SCRIPT = """
import copy, json, os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
django.setup()
from django.conf import settings
from django.core.management import call_command
call_command("migrate", verbosity=0)
from assistant.pm import PreferenceModel, save_pm
from assistant.services import model_version_register
from evals import services
from tests.tinymodels import tiny_causal_lm, tiny_tokenizer
tokenizer = copy.deepcopy(tiny_tokenizer())
pm = PreferenceModel.from_backbone(tiny_causal_lm(tokenizer).model, tokenizer, max_length=256)
folder = settings.MODELS_DIR / "tiny-pm"
save_pm(pm, tokenizer, folder, {"training_run": None})
version = model_version_register(kind="pm", name="tiny pm", path=str(folder))
run = services.eval_run_create(suite="hhh", model_version=version)
run = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))
print(json.dumps({
    "hhh_dir": str(settings.ALIGNLAB_HHH_DIR),
    "truthfulqa": str(settings.ALIGNLAB_TRUTHFULQA_FILE),
    "status": run.status,
    "error": run.error,
    "n": run.results.get("overall", {}).get("n"),
    "categories": {c: v["n"] for c, v in run.results.get("categories", {}).items()},
}))
"""


def test_a_bare_clone_runs_the_hhh_eval_from_the_shipped_data(tmp_path):
    import json

    clone = tmp_path / "alone" / "alignlab"  # nothing beside it: no ../shared
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone.parent / "shared").exists()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALIGNLAB_", "DATABASE_", "CELERY_", "DJANGO_"))
    }
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=clone,  # the clone's own modules come first on sys.path, not this checkout's
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hhh_dir"].startswith(str(clone)) and report["truthfulqa"].startswith(str(clone))
    assert report["status"] == "succeeded", report["error"]
    assert report["n"] == 221
    assert report["categories"] == {"helpful": 59, "honest": 61, "harmless": 58, "other": 43}


def test_no_default_path_or_module_reaches_outside_the_repository():
    # Tests may name ../shared (marked shared_data); settings, apps, benches and commands not.
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "Makefile", "*.toml", "*.yaml", "*.cfg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = re.compile(r"""\.\./shared|parent\s*/\s*["']shared["']""")
    found = [
        f"{path}:{number}"
        for path in tracked
        if not path.startswith("tests/")
        for number, line in enumerate((ROOT / path).read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert found == []
