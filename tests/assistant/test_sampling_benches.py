"""bench/attention_rows.py and bench/sampling.py's report, small, so the benches cannot rot."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    # bench/ is a folder of scripts, not a package: load the file as a module.
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_rows_compares_both_paths_and_finds_them_equal(capsys):
    assert load("attention_rows").main(["--prefix", "48", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    differences = [
        float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "difference" in line
    ]
    assert len(differences) == 3 and max(differences) < 1e-5
    rows = [
        line
        for line in out.splitlines()
        if line.startswith("| products") or line.startswith("| attention")
    ]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| products", "bmm"],
        ["| products", "onednn"],
        ["| attention", "bmm"],
        ["| attention", "onednn"],
    ]


def test_the_sampling_report_gives_each_repeats_ratio_beside_the_best_of():
    sampling = load("sampling")
    run = {"tokens_per_s": 10.0, "first_token_s": 0.3}
    result = {
        "dtype": "float32",
        "path": "float32 (no native bf16)",
        "k": {
            2: {
                "batched": run,
                "sequential": {**run, "tokens_per_s": 5.0},
                "speedup": 2.0,
                "paired_speedups": [1.9, 1.7, 1.8],
                "paired_speedup": 1.8,
            }
        },
        "first_token_s": {"cached": 0.3, "uncached": 20.0, "speedup": 66.7},
        "prompt_tokens": 5442,
    }
    table = sampling.markdown([result])
    row = "| float32 | float32 (no native bf16) | 2 | 10.0 | 5.0 | 2.00x |"
    assert f"{row} 1.90 · 1.70 · 1.80 (1.80x) |" in table
