"""The preference-file suite: a tiny PM scored through the runner on hand-made files in every
format, the length baseline and the length bias against values computed by hand, bad files
refused with a clear error (at launch, or on the failed run)."""

import gzip

import pytest

from assistant import runtime
from assistant.pm import format_for_pm
from assistant.services import model_version_register
from evals import services
from evals.models import EvalRun
from evals.stats import binomial_ci
from evals.suites.length import length_baseline, length_bias, length_report, versus_length
from tests.evals.pairs import PAIRS, hh_rows, run_file, trl_rows, write_jsonl, write_parquet

# --- The figures, by hand -----------------------------------------------------------------------


def test_the_length_baseline_counts_a_tie_as_half_a_win():
    chosen = [len(c) for _, c, _ in PAIRS]
    rejected = [len(r) for _, _, r in PAIRS]
    cell = length_baseline(chosen, rejected)
    assert (cell["accuracy"], cell["correct"], cell["n"], cell["ties"]) == (0.625, 2.5, 4, 1)
    assert (cell["low"], cell["high"]) == binomial_ci(2.5, 4)
    assert length_baseline([], [])["accuracy"] is None


def test_the_length_bias_is_spearman_over_every_scored_response():
    # Ranks of the lengths 1, 3, 2, 4 against scores ranked 1..4: Σd² = 2, ρ = 1 − 6·2/(4·15).
    assert length_bias([1.0, 2.0, 3.0, 4.0], [10, 30, 20, 40])["rho"] == pytest.approx(0.8)
    # A tie gets the average rank: lengths ranked 1.5, 1.5, 3, 4 against 4, 3, 2, 1 (ρ = −0.9487).
    tied = length_bias([4.0, 3.0, 2.0, 1.0], [5, 5, 7, 9])
    assert tied["rho"] == pytest.approx(-0.9486833) and tied["n"] == 4
    assert tied["method"] == "spearman"
    assert length_bias([1.0, 1.0, 1.0], [1, 2, 3])["rho"] is None  # a constant scorer
    # length_report pools chosen and rejected: n is every response, twice the pairs.
    # Scores 4, 1 | 2, 3 and lengths 40, 10 | 30, 20: ranks 4 1 2 3 against 4 1 3 2, ρ = 0.8.
    report = length_report([4.0, 1.0], [2.0, 3.0], [40, 10], [30, 20])
    assert report["length_bias"]["n"] == 4 and report["length_bias"]["rho"] == pytest.approx(0.8)


def test_the_verdict_against_length_goes_both_ways():
    longer, shorter = [10] * 60, [5] * 60
    # The chosen response is always the longer one: the baseline is perfect.
    worse = versus_length([True] * 30 + [False] * 30, longer, shorter)
    assert (worse["verdict"], worse["rule"], worse["baseline"]) == ("worse", "longer", 1.0)
    assert worse["difference"] == pytest.approx(-0.5) and worse["high"] < 0
    # Longer on 20 of 60 pairs: "shorter wins" (40 of 60) is the rule to beat.
    mixed_chosen, mixed_rejected = [10] * 20 + [5] * 40, [5] * 20 + [10] * 40
    beats = versus_length([True] * 58 + [False] * 2, mixed_chosen, mixed_rejected)
    assert (beats["verdict"], beats["rule"]) == ("beats", "shorter")
    assert beats["baseline"] == pytest.approx(40 / 60)
    assert beats["difference"] == pytest.approx(18 / 60) and beats["low"] > 0
    # All ties (a baseline of 1/2) and a PM at 1/2: no better.
    even = versus_length([True, False] * 30, longer, longer)
    assert even["verdict"] == "no_better" and even["difference"] == pytest.approx(0)
    assert even["low"] < 0 < even["high"]


# --- The suite through the runner ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_tiny_pm_scores_the_same_pairs_in_every_format(pm_version, data_root):
    files = {
        "hh.jsonl": ("hh-rlhf", write_jsonl(data_root / "hh.jsonl", hh_rows(), blank=True)),
        "trl.jsonl": ("trl", write_jsonl(data_root / "trl.jsonl", trl_rows())),
        "trl.parquet": ("trl", write_parquet(data_root / "trl.parquet", trl_rows())),
    }
    hh_gz = data_root / "hh.jsonl.gz"
    hh_gz.write_bytes(gzip.compress(files["hh.jsonl"][1].read_bytes()))
    files["hh.jsonl.gz"] = ("hh-rlhf", hh_gz)
    # TRL's string form (one user prompt): the first pair again.
    context, chosen, rejected = PAIRS[0]
    plain = {"prompt": context[0][1], "chosen": chosen, "rejected": rejected}
    files["plain.jsonl"] = ("trl", write_jsonl(data_root / "plain.jsonl", [plain]))

    # What the PM must see: each pair's context and response as an HH-RLHF transcript.
    scorer = runtime.pm_scorer(pm_version)
    chosen_scores = scorer.score([format_for_pm(ctx, c) for ctx, c, _ in PAIRS])
    rejected_scores = scorer.score([format_for_pm(ctx, r) for ctx, _, r in PAIRS])
    right = sum(c > r for c, r in zip(chosen_scores, rejected_scores, strict=True))

    results = {}
    for name, (fmt, path) in files.items():
        run = run_file(pm_version, path, fmt)
        assert run.status == "succeeded", (name, run.error)
        results[name] = run.results
        assert run.results["file"]["name"] == str(path) and run.results["file"]["format"] == fmt
        assert run.pairs_path == str(path.resolve())
    whole = results["hh.jsonl"]
    assert whole["overall"]["n"] == 4 and whole["overall"]["correct"] == right
    assert whole["length_baseline"]["accuracy"] == 0.625 and whole["length_baseline"]["ties"] == 1
    assert whole["length_bias"]["n"] == 8 and whole["length_bias"]["method"] == "spearman"
    expected_rho = length_bias(
        [*chosen_scores, *rejected_scores],
        [len(c) for _, c, _ in PAIRS] + [len(r) for _, _, r in PAIRS],
    )["rho"]
    assert whole["length_bias"]["rho"] == pytest.approx(expected_rho, abs=1e-6)
    assert whole["versus_length"]["verdict"] in ("beats", "no_better", "worse")
    assert whole["file"]["pairs"] == 4 and whole["file"]["skipped"] == {}
    for name in ("trl.jsonl", "trl.parquet", "hh.jsonl.gz"):
        for key in ("overall", "length_baseline", "versus_length"):
            assert results[name][key] == pytest.approx(whole[key]), (name, key)
        assert results[name]["length_bias"]["rho"] == pytest.approx(expected_rho, abs=1e-6)
    assert results["plain.jsonl"]["overall"]["correct"] == int(
        chosen_scores[0] > rejected_scores[0]
    )
    # The limit option scores the first N pairs only.
    limited = run_file(pm_version, files["hh.jsonl"][1], "hh-rlhf", options={"limit": 2})
    assert limited.results["overall"]["n"] == 2 and limited.results["file"]["scored"] == 2


@pytest.mark.django_db
def test_rows_the_parsers_skip_are_counted(pm_version, data_root):
    rows = [*trl_rows(), {**trl_rows()[0], "prompt": [{"role": "system", "content": "Be nice"}]}]
    run = run_file(pm_version, write_jsonl(data_root / "trl.jsonl", rows), "trl")
    assert run.status == "succeeded", run.error
    assert run.results["file"]["skipped"] == {"system_message": 1}
    assert run.results["overall"]["n"] == 4


# --- Bad files: refused at launch, or a failed run saying why -----------------------------------


def refusal(version, **fields) -> dict:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        services.eval_run_create(suite="preference_file", model_version=version, **fields)
    return caught.value.message_dict


@pytest.mark.django_db
def test_bad_requests_are_refused_at_launch(pm_version, data_root, tmp_path):
    good = write_jsonl(data_root / "hh.jsonl", hh_rows())
    outside = write_jsonl(tmp_path / "outside.jsonl", hh_rows())
    (data_root / "escape").symlink_to(tmp_path)
    (data_root / "empty.jsonl").write_text("")
    (data_root / "blank.jsonl").write_text("\n\n")
    write_jsonl(data_root / "no_rejected.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b"}])
    write_parquet(data_root / "prompts.parquet", [{"prompt": "p", "chosen": "c"}])
    (data_root / "junk.parquet").write_bytes(b"PAR1 not really")

    assert (
        "unknown format 'csv'"
        in refusal(pm_version, pairs_path=str(good), pairs_format="csv")["pairs_format"][0]
    )
    for path in (outside, data_root / "escape" / "outside.jsonl", "/etc/passwd", "x\x00y"):
        [message] = refusal(pm_version, pairs_path=str(path), pairs_format="hh-rlhf")["pairs_path"]
        assert message.startswith(f"no file {str(path)!r} inside the data roots ({data_root})")
    assert "one of the two" in refusal(pm_version, pairs_format="hh-rlhf")["pairs_path"][0]
    cases = {
        "empty.jsonl": "empty.jsonl: the file is empty",
        "blank.jsonl": "blank.jsonl: the file holds no rows",
        "no_rejected.jsonl": 'no_rejected.jsonl: line 1: missing "rejected"',
        "prompts.parquet": "prompts.parquet: the Parquet file has no column 'rejected' "
        "(its columns: 'prompt', 'chosen')",
        "junk.parquet": "junk.parquet: cannot read the Parquet file",
    }
    for name, words in cases.items():
        fmt = "trl" if name.endswith("parquet") else "hh-rlhf"
        [message] = refusal(pm_version, pairs_path=str(data_root / name), pairs_format=fmt)[
            "pairs_path"
        ]
        assert message.startswith(words), (name, message)
    with pytest.raises(Exception, match="reads no preference file"):
        services.eval_run_create(suite="hhh", model_version=pm_version, pairs_path=str(good))
    lm = model_version_register(kind="lm", name="lm", path=str(tmp_path))
    with pytest.raises(Exception, match="does not apply"):
        services.eval_run_create(
            suite="preference_file", model_version=lm, pairs_path=str(good), pairs_format="trl"
        )
    assert not EvalRun.objects.filter(suite="preference_file").exists()


@pytest.mark.django_db
def test_a_file_bad_past_its_first_row_fails_the_run_saying_where(
    client, rita, pm_version, data_root
):
    from django.urls import reverse
    from django.utils.html import escape

    rows = [*hh_rows(), {"chosen": 3, "rejected": "x"}]
    path = write_jsonl(data_root / "hh.jsonl", rows)
    run = run_file(pm_version, path, "hh-rlhf")
    assert run.status == "failed"
    reason = 'PreferenceFileError: hh.jsonl: line 5: "chosen" is not a string'
    assert run.error.startswith(reason)
    # Rows that are all skipped: nothing to score, and why.
    skipped = write_jsonl(data_root / "skipped.jsonl", [{"chosen": "hi", "rejected": "ho"}])
    run_skipped = run_file(pm_version, skipped, "hh-rlhf")
    assert run_skipped.error.startswith(
        "PreferenceFileError: skipped.jsonl: no pair to score (skipped: 1 not_starting_with_human)"
    )
    # A file gone by the time the worker runs.
    gone = run_file(pm_version, write_jsonl(data_root / "gone.jsonl", hh_rows()), "hh-rlhf")
    assert gone.status == "succeeded"
    again = services.eval_run_create(
        suite="preference_file",
        model_version=pm_version,
        pairs_path=str(data_root / "gone.jsonl"),
        pairs_format="hh-rlhf",
    )
    (data_root / "gone.jsonl").unlink()
    again = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=again.pk))
    assert "gone.jsonl is not on this worker" in again.error
    # Shown where the researcher looks: the leaderboard and the run's page.
    client.force_login(rita)
    board = client.get(reverse("evals:leaderboard")).content.decode()
    assert escape(reason) in board and reverse("evals:run", args=[run.pk]) in board
    page = client.get(reverse("evals:run", args=[run.pk])).content.decode()
    assert escape(reason) in page


@pytest.mark.django_db
def test_held_out_reports_the_length_baseline_and_bias_too(pm_version, tmp_path):
    from collection.exports import export_rows
    from collection.imports import dataset_import_create
    from collection.snapshots import snapshot_create
    from tests.training.test_runs import toy_trl_file

    # The better response ("I am glad to help with X.") is 2 characters shorter than the worse
    # ("I will not talk about X now."): the length baseline gets every held-out pair wrong.
    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl"), format="trl")
    snapshot = snapshot_create(filter={"imports": [imported.pk]})
    held = list(export_rows(snapshot, "ranked", split="held_out"))
    assert held
    run = services.eval_run_create(suite="held_out", model_version=pm_version, snapshot=snapshot)
    run = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))
    assert run.status == "succeeded", run.error
    baseline = run.results["length_baseline"]
    assert (baseline["accuracy"], baseline["n"], baseline["ties"]) == (0.0, len(held), 0)
    assert run.results["length_bias"]["n"] == 2 * len(held)
    pm = run.results["overall"]["accuracy"]
    # "Shorter wins" gets them all right: the PM is measured against that.
    versus = run.results["versus_length"]
    assert (versus["rule"], versus["baseline"]) == ("shorter", 1.0)
    assert versus["difference"] == pytest.approx(pm - 1.0)


def test_the_length_baseline_on_the_real_hh_rlhf_harmless_test_file():
    """HH-RLHF harmless-base (2,312 pairs, shipped in the repository): the harmless response is
    often the short refusal, so "longer wins" lands below chance (0.446 [0.426, 0.466], 11
    ties) and "shorter wins" is the length rule a PM must beat there."""
    from evals.preference_files import read_pairs
    from tests.data import HH_TEST

    loaded = read_pairs(HH_TEST, "hh-rlhf")
    assert len(loaded.pairs) == 2312 and loaded.skipped == {}
    chosen = [len(c.strip()) for _, c, _ in loaded.pairs]
    rejected = [len(r.strip()) for _, _, r in loaded.pairs]
    cell = length_baseline(chosen, rejected)
    assert 0.40 < cell["accuracy"] < 0.50 and cell["high"] < 0.5
    assert versus_length([False] * len(chosen), chosen, rejected)["rule"] == "shorter"
