"""Sampling speed of the default model on this machine: batched vs sequential, with and without
the prompt's prefix cache, in bf16 and fp32. Prints a markdown table; --json writes the figures.
bf16 runs by default only where this CPU computes it natively; each row says which path it took.

    .venv/bin/python bench/sampling.py --max-new-tokens 32 --json var/bench-sampling.json

Goals: k=2 batched >= 1.8x the throughput of 2 sequential calls; the prefix cache cuts time to
first token by >= 5x. Samples run to a fixed length (stop strings and EOS ignored), so every
configuration decodes exactly the same number of tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant import transcripts  # noqa: E402
from bench.machine import run_header, write_json  # noqa: E402

DEFAULT_PROMPT = ROOT / "assistant" / "prompts" / "hhh_v1.txt"
QUESTION = "Can you give me a few tips for keeping houseplants alive? I keep killing them."


def synthetic_transcript(words: int = 3000) -> str:
    """A stand-in for the HHH prompt when its file is missing: ~`words` of Human/Assistant turns."""
    turn = transcripts.render(
        [
            ("user", "Could you explain how I should plan a small vegetable garden this spring?"),
            (
                "assistant",
                "Start with a sunny spot, test the soil, pick a few easy crops such as lettuce, "
                "beans and tomatoes, water deeply twice a week, and keep notes on what works.",
            ),
        ]
    )
    pairs = max(0, -(-words // len(turn.split())))  # enough turns for `words` words
    return "Below are a series of dialogues between people and an AI assistant." + turn * pairs


def timed_calls(backend, context, params, *, n: int, calls: int) -> dict:
    """`calls` sequential generate() calls of `n` samples each: tokens/s and mean TTFT."""
    started = time.perf_counter()
    first_tokens, tokens = [], 0
    for _ in range(calls):
        samples = backend.generate(context, n, params, ignore_eos=True)
        tokens += sum(sample.completion_tokens for sample in samples)
        first_tokens.append(samples[0].first_token_s)
    elapsed = time.perf_counter() - started
    return {
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "first_token_s": statistics.mean(first_tokens),
    }


def fastest(results: list[dict]) -> dict:
    """The fastest run: other work on a shared machine only ever slows one down."""
    return min(results, key=lambda result: result["seconds"])


def bench_dtype(path: Path, dtype: str, context, args, *, packed: bool | None = None) -> dict:
    import torch

    from assistant.backends.base import SamplingParams
    from assistant.backends.hf import TransformersBackend
    from assistant.hardware import bf16_path

    backend = TransformersBackend(path, dtype=dtype, packed_linears=packed)
    taken = bf16_path(backend.dtype == torch.bfloat16, backend.device)
    if backend.dtype == torch.float32:
        taken += (
            f"; {backend.packed_linears} linear layers through oneDNN, reordered"
            if backend.packed_linears
            else "; linear layers through F.linear"
        )
    print(f"{dtype}: {taken}", file=sys.stderr, flush=True)
    params = SamplingParams(
        temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, stop=(), seed=0
    )
    one_token = SamplingParams(temperature=0, max_new_tokens=1, stop=())
    backend.generate(context, 1, one_token)  # computes the prefix cache
    result = {"dtype": str(backend.dtype).removeprefix("torch."), "path": taken, "k": {}}
    for k in args.ks:
        backend.generate(context, k, one_token)  # first use of a batch size pays for set-up
        batched, sequential = [], []
        # Alternated, so a burst of someone else's work does not land on one side only.
        for _ in range(args.repeats):
            batched.append(timed_calls(backend, context, params, n=k, calls=1))
            sequential.append(timed_calls(backend, context, params, n=1, calls=k))
        # Each repeat's own ratio too: its batched and sequential calls ran back to back, so
        # a machine whose speed drifts by 20 % over minutes (seen here) moves both alike.
        paired = [
            one["tokens_per_s"] / other["tokens_per_s"]
            for one, other in zip(batched, sequential, strict=True)
        ]
        batched, sequential = fastest(batched), fastest(sequential)
        result["k"][k] = {
            "batched": batched,
            "sequential": sequential,
            "speedup": batched["tokens_per_s"] / sequential["tokens_per_s"],
            "paired_speedups": paired,
            "paired_speedup": statistics.median(paired),
        }
    cached, uncached = [], []
    for _ in range(args.repeats):
        backend.prefix_cache = True
        cached.append(timed_calls(backend, context, one_token, n=1, calls=1))
        backend.prefix_cache = False
        uncached.append(timed_calls(backend, context, one_token, n=1, calls=1))
    cached, uncached = fastest(cached), fastest(uncached)
    result["first_token_s"] = {
        "cached": cached["first_token_s"],
        "uncached": uncached["first_token_s"],
        "speedup": uncached["first_token_s"] / cached["first_token_s"],
    }
    result["prompt_tokens"] = backend.generate(context, 1, one_token)[0].prompt_tokens
    return result


def markdown(results: list[dict]) -> str:
    lines = [
        "| dtype | path | k | batched tok/s | sequential tok/s | batched / sequential | "
        "per repeat (median) | TTFT batched (s) | TTFT sequential (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for k, row in result["k"].items():
            lines.append(
                f"| {result['dtype']} | {result['path']} | {k} | "
                f"{row['batched']['tokens_per_s']:.1f} | "
                f"{row['sequential']['tokens_per_s']:.1f} | {row['speedup']:.2f}x | "
                f"{' · '.join(f'{r:.2f}' for r in row['paired_speedups'])} "
                f"({row['paired_speedup']:.2f}x) | "
                f"{row['batched']['first_token_s']:.3f} | "
                f"{row['sequential']['first_token_s']:.3f} |"
            )
    lines += [
        "",
        "| dtype | prompt tokens | TTFT with prefix cache (s) | TTFT without (s) | cut |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in results:
        ttft = result["first_token_s"]
        lines.append(
            f"| {result['dtype']} | {result['prompt_tokens']} | {ttft['cached']:.3f} | "
            f"{ttft['uncached']:.3f} | {ttft['speedup']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-file", type=Path, default=DEFAULT_PROMPT)
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    models_dir = Path(os.environ.get("ALIGNLAB_MODELS_DIR", var_dir / "models"))
    parser.add_argument("--models-dir", type=Path, default=models_dir)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--dtypes", nargs="+", help="default: bfloat16 and float32 where bf16 is native, else auto"
    )
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each")
    parser.add_argument(
        "--linears",
        choices=("auto", "packed", "plain", "both"),
        default="both",
        help="float32 linear layers: oneDNN on reordered weights (packed, the backend's choice "
        "on a CPU), F.linear (plain), or both in the same run (default)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from assistant.backends.base import Context, Message
    from assistant.default_model import ensure_default_model
    from assistant.hardware import native_bf16

    if args.dtypes is None:  # emulated bf16 is ~80x slower and measures nothing we ship
        args.dtypes = ["bfloat16", "float32"] if native_bf16("cpu") else ["auto"]
    torch.set_num_threads(args.threads)
    if args.prompt_file.exists():
        prompt, prompt_source = args.prompt_file.read_text(), str(args.prompt_file)
    else:
        prompt, prompt_source = synthetic_transcript(), "synthetic ~3,000-word transcript"
        print(f"{args.prompt_file} not found: using a {prompt_source}", file=sys.stderr)
    context = Context(prompt=prompt, prompt_key="bench", messages=(Message("user", QUESTION),))
    path = ensure_default_model(args.models_dir)
    load_before = os.getloadavg()
    results = []
    for dtype in args.dtypes:
        if dtype == "float32" and args.linears == "both":  # the same run: before and after
            results.append(bench_dtype(path, dtype, context, args, packed=False))
            results.append(bench_dtype(path, dtype, context, args, packed=None))
        else:
            packed = {"packed": True, "plain": False}.get(args.linears)
            results.append(bench_dtype(path, dtype, context, args, packed=packed))
    report = {
        **run_header(args.threads),
        "prompt": prompt_source,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "results": results,
    }
    print(markdown(results))
    print(
        f"\n{report['cpu']}, {report['cores']} cores, {args.threads} threads, torch "
        f"{report['torch']}; prompt: {prompt_source}; {args.max_new_tokens} new tokens; "
        f"best of {args.repeats}; 1-min load average {load_before[0]:.2f} before, "
        f"{report['load_average_before_after'][1]:.2f} after"
    )
    write_json(args.json, report)


if __name__ == "__main__":
    main()
