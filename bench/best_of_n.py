"""Best-of-n latency through the real collection path (issue 14): the time from a contractor's
message to the k shown responses, for best-of-n (n candidates in one batched call, scored by
the PM in one packed `score_groups` call, k shown) against plain k sampling, same model, same
run, alternated so that other work on the machine lands on both sides.

    .venv/bin/python bench/best_of_n.py --n 8 --k 2 --max-new-tokens 32 --repeats 5 \\
        --json var/bench/best_of_n.json

The LM is the default model (SmolLM2-135M-Instruct) with the HHH prompt. The PM is a preference
model on the same backbone with an untrained head (scoring costs the same as a trained one's;
its picks do not matter for timing). Each timed call is `turn_submit` then
`turn_generate` (the generation task's body: sampling, PM scoring, the database
writes) on a throwaway SQLite database. Sampling is the default LM's (temperature 0.8, top_p
0.95) with `--max-new-tokens`; a sample ends at EOS or a stop string as in collection, so a turn
waits for its longest candidate (the real cost of best-of-n). Goal: best-of-8 with
k = 2 at most 1.5x plain k = 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import run_header, write_json  # noqa: E402


def setup_django(work: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{work / 'bench.sqlite3'}",
        CELERY_BROKER_URL="memory://",
        ALIGNLAB_VAR_DIR=str(work / "var"),
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--models-dir", type=Path, default=var_dir / "models")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models_dir = args.models_dir.resolve()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="alignlab-best-of-n-"))
    setup_django(work)

    from django.contrib.auth import get_user_model
    from transformers import AutoTokenizer

    from assistant.default_model import ensure_default_model
    from assistant.pm import PreferenceModel, save_pm
    from assistant.selectors import prompt_latest
    from assistant.services import model_version_register
    from collection.conversations import conversation_start, turn_submit
    from collection.generation import turn_generate
    from collection.judgements import judgement_submit
    from collection.models import Campaign, Turn

    lm_path = ensure_default_model(models_dir)
    pm_path = work / "pm"
    tokenizer = AutoTokenizer.from_pretrained(lm_path, local_files_only=True)
    save_pm(PreferenceModel.from_backbone(lm_path, tokenizer, max_length=1024), tokenizer,
            pm_path, {})  # fmt: skip
    defaults = {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": args.max_new_tokens}
    lm = model_version_register(
        kind="lm", name="default", path=str(lm_path), generation_defaults=defaults
    )
    pm_version = model_version_register(kind="pm", name="bench pm", path=str(pm_path))
    prompt = prompt_latest(name="hhh")
    common = {"lm_version": lm, "prompt": prompt, "max_turns": 100, "quota_per_contractor": 10**6}
    plain = Campaign.objects.create(name="plain", k=args.k, **common)
    best = Campaign.objects.create(
        name="best-of-n", k=args.k, best_of_n=args.n, pm_version=pm_version, **common
    )
    user = get_user_model().objects.create_user("bench")
    from django.conf import settings

    settings.COLLECTION_MESSAGES_PER_MINUTE = 10**6

    questions = iter(f"Question {i}: how do I keep a houseplant alive?" for i in range(10**6))

    tokens: dict[int, list[int]] = {plain.pk: [], best.pk: []}

    def one_turn(campaign) -> float:
        # A new conversation each time: every timed turn has the same length of context (the
        # HHH prompt, whose prefix cache is warm, and one message).
        conversation = conversation_start(campaign=campaign, contractor=user)
        started = time.perf_counter()
        turn = turn_submit(conversation=conversation, contractor=user, text=next(questions))
        turn = turn_generate(turn_id=turn.pk)
        elapsed = time.perf_counter() - started
        assert turn.status == Turn.Status.READY, turn.error
        tokens[campaign.pk].append(sum(r.completion_tokens for r in turn.responses.all()))
        judgement_submit(turn=turn, contractor=user, scale=2)  # the next turn may start
        assert turn.responses.count() == args.k
        return elapsed

    one_turn(plain), one_turn(best)  # loads the LM and PM, fills the prompt cache
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"plain": [], "best_of_n": []}
    for _ in range(args.repeats):
        times["plain"].append(one_turn(plain))
        times["best_of_n"].append(one_turn(best))
    summary = {
        side: {"min": min(v), "median": statistics.median(v), "max": max(v), "runs": v}
        for side, v in times.items()
    }
    ratio_median = summary["best_of_n"]["median"] / summary["plain"]["median"]
    ratio_min = summary["best_of_n"]["min"] / summary["plain"]["min"]
    pairs = [b / p for p, b in zip(times["plain"], times["best_of_n"], strict=True)]
    report = {
        **run_header(args.threads),
        "n": args.n,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "prompt": prompt.key if prompt else None,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "seconds": summary,
        "shown_completion_tokens_mean": {
            "plain": statistics.mean(tokens[plain.pk]),
            "best_of_n": statistics.mean(tokens[best.pk]),
        },
        "ratio_of_medians": ratio_median,
        "ratio_of_minimums": ratio_min,
        "paired_ratios": {"min": min(pairs), "median": statistics.median(pairs), "max": max(pairs)},
    }
    print("| side | min (s) | median (s) | max (s) |\n| --- | --- | --- | --- |")
    for side, row in summary.items():
        print(f"| {side} | {row['min']:.2f} | {row['median']:.2f} | {row['max']:.2f} |")
    print(
        f"\nbest-of-{args.n} / plain k={args.k}: {ratio_median:.2f}x (medians), "
        f"{ratio_min:.2f}x (minimums), paired {min(pairs):.2f}-{max(pairs):.2f}x; "
        f"{report['cpu']}, {report['cores']} cores, {args.threads} threads, torch "
        f"{report['torch']}, native bf16 {report['native_bf16']}; {args.max_new_tokens} new "
        f"tokens; load {load_before:.2f} before, {report['load_average_before_after'][1]:.2f} after"
    )
    write_json(args.json, report)


if __name__ == "__main__":
    main()
