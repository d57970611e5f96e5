"""The preference-file suite: a tiny PM scored through the runner on hand-made files in every
format, the length baseline and the length bias against values computed by hand, bad files
refused with a clear error (at launch, or on the failed run)."""

import gzip
import json

import pytest

from assistant import runtime
from assistant.pm import format_for_pm, save_pm
from assistant.services import model_version_register
from assistant.transcripts import render
from evals import services
from evals.models import EvalRun
from evals.stats import binomial_ci
from evals.suites.length import length_baseline, length_bias, length_report, versus_length
from tests.training.toy_pm import tiny_pm

# (context, chosen, rejected). The chosen response is longer, shorter, as long (3 characters
# each: a tie) and longer: "the longer response wins" scores 1 + 0 + 1/2 + 1 of 4.
PAIRS = [
    ([("user", "What is the capital of France?")], "The capital of France is Paris.", "Paris."),
    (
        [("user", "Can you help me write a poem about the sea?")],
        "Of course.",
        "Here is a short poem about waves and light.",
    ),
    (
        [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke")],
        "No.",
        "Ok!",
    ),
    ([("user", "Is the sea salty?")], "Yes, the sea is salty.", "I think so"),
]


def messages(pairs):
    return [{"role": role, "content": text} for role, text in pairs]


def hh_rows():
    return [
        {
            "chosen": render([*context, ("assistant", chosen)]),
            "rejected": render([*context, ("assistant", rejected)]),
        }
        for context, chosen, rejected in PAIRS
    ]


def trl_rows():
    return [
        {
            "prompt": messages(context),
            "chosen": messages([("assistant", chosen)]),
            "rejected": messages([("assistant", rejected)]),
        }
        for context, chosen, rejected in PAIRS
    ]


def write_jsonl(path, rows, *, blank=False):
    lines = [json.dumps(row) for row in rows]
    text = "\n".join(lines) + ("\n\n" if blank else "\n")
    path.write_text(text)
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def data_root(tmp_path, settings):
    root = tmp_path / "data"
    root.mkdir()
    settings.ALIGNLAB_DATA_ROOTS = [root]
    settings.COLLECTION_UPLOADS_DIR = tmp_path / "uploads"
    return root


@pytest.fixture(scope="module")
def tiny_pm_folder(tmp_path_factory):
    model, tokenizer = tiny_pm(max_length=128)
    folder = tmp_path_factory.mktemp("pm") / "pm"
    save_pm(model, tokenizer, folder, {})
    return folder


@pytest.fixture
def pm_version(db, tiny_pm_folder):
    yield model_version_register(kind="pm", name="tiny pm", path=str(tiny_pm_folder))
    runtime.unload_all()


def run_file(version, path, fmt, **extra):
    run = services.eval_run_create(
        suite="preference_file",
        model_version=version,
        pairs_path=str(path),
        pairs_format=fmt,
        **extra,
    )
    return services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))


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
    longer = [10] * 60
    shorter = [5] * 60
    # The chosen response is always the longer one: the baseline is perfect.
    assert versus_length([True] * 30 + [False] * 30, longer, shorter)["verdict"] == "worse"
    # It is always the shorter one: the baseline is always wrong, the PM right 50 times.
    beats = versus_length([True] * 50 + [False] * 10, shorter, longer)
    assert beats["verdict"] == "beats" and beats["difference"] == pytest.approx(50 / 60)
    assert beats["low"] > 0
    # All ties (a baseline of 1/2) and a PM at 1/2: no better.
    even = versus_length([True, False] * 30, longer, longer)
    assert even["verdict"] == "no_better" and even["difference"] == pytest.approx(0)


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
