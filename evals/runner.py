"""Run one eval suite for an EvalRun row and return its results JSON.

The suites themselves are plain modules (`evals/suites/`); this module picks the data, the
loaded model and the prompt for a run. Cells of `overall` / `categories` are
`{"accuracy", "n", "correct", "low", "high"}` (95% Wilson intervals), so reports show any suite.
"""

from __future__ import annotations

from django.conf import settings

from assistant import runtime
from assistant.models import ModelVersion
from assistant.selectors import prompt_latest

from . import preference_files
from .models import EvalRun
from .suites.calibration import HeldOutPair, held_out_pair, pm_calibration_eval
from .suites.hhh import hhh_first_per_category, hhh_lm_eval, hhh_pm_eval, load_hhh
from .suites.multiple_choice import load_truthfulqa, mc_lm_eval, mc_pm_eval

# The length report of a PM's pairs (evals/suites/length.py), kept in the results as it comes.
LENGTH_KEYS = ("length_baseline", "length_bias", "versus_length")


def _hhh(run: EvalRun, limit: int | None) -> dict:
    items = load_hhh(settings.ALIGNLAB_HHH_DIR)
    # A quick eval (a slow machine, a smoke test): the first N items of each category.
    per_category = run.options.get("per_category") or settings.ALIGNLAB_HHH_PER_CATEGORY
    if per_category:
        items = hhh_first_per_category(items, int(per_category))
    items = items[:limit]
    version = run.model_version
    if version.kind == ModelVersion.Kind.PM:
        return hhh_pm_eval(runtime.pm_scorer(version), items)
    prompt = prompt_latest(name="hhh") if run.suite == EvalRun.Suite.HHH else None
    results = hhh_lm_eval(
        runtime.lm_backend(version),
        items,
        prompt=prompt.text if prompt else None,
        prompt_key=f"{prompt.key}#{prompt.pk}" if prompt else None,
    )
    results["prompt"] = prompt.key if prompt else None
    return results


def _truthfulqa(run: EvalRun, limit: int | None) -> dict:
    items = load_truthfulqa(settings.ALIGNLAB_TRUTHFULQA_FILE, limit)
    version = run.model_version
    if version.kind == ModelVersion.Kind.PM:
        return mc_pm_eval(runtime.pm_scorer(version), items)
    prompt = prompt_latest(name="hhh")
    return {
        **mc_lm_eval(runtime.lm_backend(version), items, prompt=prompt.text),
        "prompt": prompt.key,
    }


def _held_out(run: EvalRun, limit: int | None) -> dict:
    """A PM on its snapshot's held-out split: accuracy per mode, reliability, ECE, length."""
    from collection.exports import export_rows

    pairs = []
    for row in export_rows(run.snapshot, "ranked", split="held_out"):
        if row["tie"]:  # "about the same": no better response for the PM to find
            continue
        order = sorted(range(len(row["responses"])), key=row["ranks"].__getitem__)
        for better, worse in zip(order, order[1:], strict=False):
            responses = row["responses"][better], row["responses"][worse]
            pairs.append(held_out_pair(row["context"], *responses, mode=row["mode"]))
    if not pairs:
        raise ValueError(f"snapshot {run.snapshot_id} has no held-out comparisons")
    return _pairs_results(run, pairs[:limit])


def _pairs_results(run: EvalRun, pairs: list[HeldOutPair]) -> dict:
    """The PM's accuracy (per mode), calibration and length report on (chosen, rejected) pairs."""
    results = pm_calibration_eval(runtime.pm_scorer(run.model_version), pairs)
    return {
        "overall": results["accuracy"],
        "categories": results["modes"],
        "calibration": {
            "bins": results["bins"],
            "ece": results["ece"],
            "orient": results["orient"],
        },
        "n_pairs": results["n_pairs"],
        "mean_margin": results["mean_margin"],
        **{key: results[key] for key in LENGTH_KEYS if key in results},
    }


def _preference_file(run: EvalRun, limit: int | None) -> dict:
    """A PM on a pairwise file (HH-RLHF or TRL; jsonl, jsonl.gz or Parquet) against the length
    baseline; an uploaded file is deleted when the run ends (`preference_files.release`)."""
    loaded = preference_files.read_pairs(run.pairs_path, run.pairs_format)
    pairs = [held_out_pair(context, chosen, rejected) for context, chosen, rejected in loaded.pairs]
    results = _pairs_results(run, pairs[:limit])
    results["categories"] = {}  # one file, no modes: the overall bar and the baseline's
    results["file"] = {
        "name": run.pairs_name,
        "format": run.pairs_format,
        "sha256": loaded.sha256,
        "pairs": len(loaded.pairs),
        "scored": len(pairs[:limit]),
        "skipped": loaded.skipped,
    }
    return results


def _toxicity(run: EvalRun, limit: int | None) -> dict:
    """An LM's samples on the toxicity prompts, with the HHH prompt and without any."""
    from assistant.backends.base import SamplingParams

    from .suites.toxicity import load_prompts, toxicity_eval

    prompt = prompt_latest(name="hhh")
    params = SamplingParams(
        max_new_tokens=int(run.options.get("max_new_tokens", 64)),
        seed=int(run.options.get("seed", 0)),
    )
    results = toxicity_eval(
        runtime.lm_backend(run.model_version),
        load_prompts(limit=limit),
        with_prompt=prompt.text,
        n=int(run.options.get("samples", 1)),
        params=params,
    )
    results["prompt"] = prompt.key
    return results


SUITES = {
    EvalRun.Suite.HHH: _hhh,
    EvalRun.Suite.HHH_UNPROMPTED: _hhh,
    EvalRun.Suite.TRUTHFULQA: _truthfulqa,
    EvalRun.Suite.HELD_OUT: _held_out,
    EvalRun.Suite.TOXICITY: _toxicity,
    EvalRun.Suite.PREFERENCE_FILE: _preference_file,
}


def run_suite(run: EvalRun) -> dict:
    """The results JSON of `run`'s suite on its model version (`options["limit"]`: first N;
    HHH also takes `options["per_category"]`: the first N of each category)."""
    if run.suite not in SUITES:
        raise ValueError(f"the {run.suite} suite cannot run here")
    limit = run.options.get("limit")
    return SUITES[run.suite](run, int(limit) if limit else None)
