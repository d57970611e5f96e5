"""Speed of the HHH evaluation (221 items, 442 transcripts) of a SmolLM2-135M preference model.

    .venv/bin/python bench/evals.py --models-dir var/bench-models --repeats 3

The PM is the default model's backbone with a new, untrained head (this measures speed, not
accuracy). Load (backbone + tokenizer + head) and eval (one `score_groups` call over the whole
suite: each item's conversation once for both responses, sorted by length into batches of at
most --batch-tokens padded tokens) are timed apart, for float32 weights, float32 weights under
bf16 autocast, bfloat16 weights, and the scorer's default ("auto": bf16 autocast only where the
CPU computes it natively). By default the two bf16 configurations run only where bf16 is native;
each line says which path it took.
Goal: the eval under 30 s on a 2-core CPU. The default model is converted into --models-dir
once, before any timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import run_header, write_json  # noqa: E402

HHH_DIR = ROOT / "evals" / "data" / "hhh_alignment"  # ships with the repository
# name → (weights dtype, autocast to bf16: True, False or "auto")
CONFIGS = {
    "auto": ("float32", "auto"),
    "float32": ("float32", False),
    "bf16-autocast": ("float32", True),
    "bfloat16": ("bfloat16", False),
}


def bench_config(folder: Path, name: str, items, args) -> dict:
    import torch
    from transformers import AutoTokenizer

    from assistant.hardware import bf16_path, resolve_bf16
    from assistant.pm import PMScorer, PreferenceModel
    from evals.suites.hhh import hhh_pm_eval

    dtype, autocast = CONFIGS[name]
    path = bf16_path(dtype == "bfloat16" or resolve_bf16(autocast, "cpu"), "cpu")
    print(f"{name}: {path}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)  # the same random head in every configuration
    model = PreferenceModel.from_backbone(
        folder, tokenizer, dtype=getattr(torch, dtype), max_length=args.max_length
    )
    if args.attention:
        model.backbone.set_attn_implementation(args.attention)
    scorer = PMScorer(
        model, tokenizer, batch_size=args.batch_size, batch_tokens=args.batch_tokens, bf16=autocast
    )
    load_s = time.perf_counter() - started
    runs = []
    for _ in range(args.repeats):
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        results = hhh_pm_eval(scorer, items)
        runs.append({"seconds": time.perf_counter() - started, "load_before": load_before})
    seconds = [run["seconds"] for run in runs]
    print(f"{name}: load {load_s:.1f} s, eval {seconds} s", file=sys.stderr, flush=True)
    return {
        "config": name,
        "path": path,
        "load_s": load_s,
        "eval_s": seconds,
        "eval_min_s": min(seconds),
        "load_average_before_each": [run["load_before"] for run in runs],
        "accuracy": results["overall"]["accuracy"],
        "chosen": [record["chosen"] for record in results["items"]],
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| weights / compute | path | load (s) | HHH eval, min (s) | all runs (s) | items/s | "
        "verdicts as first row |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    reference = rows[0]["chosen"]
    for row in rows:
        same = sum(a == b for a, b in zip(row["chosen"], reference, strict=True)) / len(reference)
        runs = ", ".join(f"{s:.1f}" for s in row["eval_s"])
        lines.append(
            f"| {row['config']} | {row['path']} | {row['load_s']:.1f} | {row['eval_min_s']:.1f} | "
            f"{runs} | "
            f"{len(reference) / row['eval_min_s']:.1f} | {same:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--models-dir", type=Path, default=var_dir / "bench-models")
    parser.add_argument("--hhh-dir", type=Path, default=HHH_DIR)
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGS),
        help="default: all where bf16 is native, else auto and float32",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="rows a batch (PMScorer.score)")
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=1024,
        help="padded tokens a batch (PMScorer.score_groups, which the HHH suite calls)",
    )
    parser.add_argument("--max-length", type=int, default=1024, help="tokens kept per text")
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of these")
    parser.add_argument(
        "--attention", choices=["sdpa", "eager"], help="the backbone's attention kernel"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from assistant.default_model import ensure_default_model
    from assistant.hardware import native_bf16
    from evals.suites.hhh import load_hhh

    if args.configs is None:  # emulated bf16 would take minutes per run and say nothing new
        args.configs = list(CONFIGS) if native_bf16("cpu") else ["auto", "float32"]
    torch.set_num_threads(args.threads)
    folder = ensure_default_model(args.models_dir)  # converted once, not timed
    items = load_hhh(args.hhh_dir)
    load_before = os.getloadavg()[0]
    rows = [bench_config(folder, name, items, args) for name in args.configs]
    report = {
        **run_header(args.threads),
        "items": len(items),
        "batch_size": args.batch_size,
        "batch_tokens": args.batch_tokens,
        "max_length": args.max_length,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "results": [{k: v for k, v in row.items() if k != "chosen"} for row in rows],
    }
    print(markdown(rows))
    print(
        f"\n{report['cpu']}, {report['cores']} cores, {args.threads} threads, torch "
        f"{report['torch']}, native bf16: {report['native_bf16']}; {len(items)} items; batches of "
        f"{args.batch_tokens} tokens; max_length "
        f"{args.max_length}; best of {args.repeats}; 1-min load average {load_before:.2f} "
        f"before, {report['load_average_before_after'][1]:.2f} after"
    )
    write_json(args.json, report)


if __name__ == "__main__":
    main()
