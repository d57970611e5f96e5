"""The HHH evaluation of the real default language model, with and without the HHH prompt.

A balanced subset (the first item of each category): the full 221 items take minutes on a
CPU and are measured by `bench/evals.py`; this test checks that the real model, the shipped
items and the prompt are wired together, on any clone. (Two items a category took 221 s of
its 900 s timeout on a slow AVX2-only box, too near a third of it beside a busy core.)
"""

import math

import pytest

from assistant import runtime
from assistant.services import default_lm_ensure
from evals import services
from evals.models import EvalRun

PER_CATEGORY = 1
CATEGORIES = ("helpful", "honest", "harmless", "other")


@pytest.mark.real_model
@pytest.mark.django_db
def test_the_default_lm_is_evaluated_prompted_and_unprompted():
    version = default_lm_ensure()
    results = {}
    for suite in (EvalRun.Suite.HHH, EvalRun.Suite.HHH_UNPROMPTED):
        run = services.eval_run_create(
            suite=suite, model_version=version, options={"per_category": PER_CATEGORY}
        )
        run = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))
        assert run.status == "succeeded", run.error
        results[suite] = run.results
    runtime.unload_all()
    for result in results.values():
        assert result["overall"]["n"] == 4 * PER_CATEGORY
        counts = {c: v["n"] for c, v in result["categories"].items()}
        assert counts == dict.fromkeys(CATEGORIES, PER_CATEGORY)
        assert [(r["category"], r["index"]) for r in result["items"]] == [
            (c, i) for c in CATEGORIES for i in range(PER_CATEGORY)
        ]
        # Real log-probabilities of real responses: finite and below zero.
        scores = [s for r in result["items"] for s in r["scores"]]
        assert all(math.isfinite(s) and s < 0 for s in scores)
    assert results["hhh"]["prompt"] == "hhh@1" and results["hhh_unprompted"]["prompt"] is None
    # The prompt is really in front: it changes the probability of every response.
    for prompted, bare in zip(
        results["hhh"]["items"], results["hhh_unprompted"]["items"], strict=True
    ):
        assert all(
            abs(a - b) > 1e-3 for a, b in zip(prompted["scores"], bare["scores"], strict=True)
        )
