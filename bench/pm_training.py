"""Preference-model training speed and accuracy: our trainer against TRL's RewardTrainer.

    .venv/bin/python bench/pm_training.py --json var/bench/pm_training.json

Both train a SmolLM2-135M backbone with a scalar head on the same HH-RLHF pairs (the fixed
split of collection/data/hh-rlhf/SOURCE.txt: held-out = lines with i % 5 == 0, 463 pairs; train =
the other 1,849), with the same max length, batch size, learning rate, schedule, bf16 autocast and
number of pairs, one epoch each, one after the other in one invocation (each trainer in a child
process of its own, so the second starts with the first one's memory given back). Reported:
pairs/s for each and their ratio (goal: ours >= 3.0x TRL), held-out accuracy of each with a 95%
Wilson interval (goal: ours >= TRL), each one's peak RSS, and our model-FLOP utilisation against
this CPU's bf16 matmul peak measured in the same run (goal: 45 %).

Both see the same tokens: each transcript is tokenised, ended with one end token (our EOC; TRL:
EOS, which it reads as the last non-pad token) and cut from the LEFT to --max-length, before
either trainer sees it. TRL gets them pre-tokenised, so its own filter (which drops over-long
pairs instead of cutting them) drops nothing. Our trainer packs each pair into one row (the
shared context once, then both responses; `assistant.pm.packed_inputs`) and groups batches by
length; TRL pads chosen and rejected rows to the longest in a random batch. TRL's own default of
gradient checkpointing is turned off so both keep all activations; TRL keeps its default
attention kernel (SDPA); ours on a CPU runs its linear layers on one flat row of real tokens and
attention in the padded rows (`assistant.segment_attention`; TRL with eager attention ran out of
this machine's 24 GB on its padded batches of 16 rows). Each trainer's peak RSS is reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.transcripts import ASSISTANT, common_prefix_length  # noqa: E402
from bench.machine import run_header, write_json  # noqa: E402

HH_FILE = ROOT / "collection" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"  # shipped


def matmul_peak(bf16: bool, seconds: float = 3.0) -> float:
    """The best bf16 (else float32) matmul rate (FLOP/s) of a few large square sizes, each for
    ~seconds/3: the peak of the path the trainers take."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    best = 0.0
    for size in (1024, 2048, 3072):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b  # warm up
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            a @ b
            runs += 1
        best = max(best, 2 * size**3 * runs / (time.perf_counter() - started))
    return best


def hh_split(path: Path) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows of the fixed split: held-out = 0-based lines with i % 5 == 0."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    return [r for i, r in enumerate(rows) if i % 5], [r for i, r in enumerate(rows) if not i % 5]


def to_ranking(row: dict):
    """An HH row → a Ranking whose context is everything up to the last "Assistant:" tag the
    two transcripts share (for 5 rows of this file they differ earlier than the last turn)."""
    from training.data import Ranking

    chosen, rejected = row["chosen"], row["rejected"]
    cut = chosen.rfind(ASSISTANT, 0, common_prefix_length(chosen, rejected))
    if cut < 0:
        raise ValueError("the transcripts share no Assistant turn")
    responses = [text[cut + len(ASSISTANT) :].strip() for text in (chosen, rejected)]
    return Ranking(responses, [0, 1], context_text=chosen[:cut], source="hh-rlhf")


def token_rows(tokenizer, texts: list[str], end_id: int, max_length: int) -> list[list[int]]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(row + [end_id])[-max_length:] for row in ids]


def transformer_flops_per_token(config, context: int) -> float:
    """Training FLOPs per token: 6 x non-embedding parameters + attention scores (PaLM, App. B)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * config.intermediate_size
    return 6 * layers * per_layer + 12 * layers * hidden * context


# --- ours ---------------------------------------------------------------------------------------


def run_ours(folder: Path, train: list, held_out: list, args) -> dict:
    import torch
    from transformers import AutoTokenizer

    from assistant.pm import PreferenceModel
    from assistant.segment_attention import SEGMENT_ATTENTION
    from evals.stats import accuracy_with_ci
    from training.compiled import wants_compiled_layers
    from training.config import PreferenceTrainingConfig
    from training.data import LengthGroupedBatchSampler, RankingCollator
    from training.loop import train_preference_model
    from training.runner import training_attention

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(args.seed)
    model = PreferenceModel.from_backbone(folder, tokenizer, max_length=args.max_length)
    config = PreferenceTrainingConfig(
        max_length=args.max_length,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        epochs=1,
        batch_size=args.batch_size,
        bf16=args.bf16,
        eval_every=0,
        checkpoint_every=0,
        seed=args.seed,
    )
    rankings = train
    attention = training_attention(model, config, torch.device("cpu"))
    compiled = wants_compiled_layers(
        model, config, torch.device("cpu"), attention=attention, distributed=False
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train_preference_model(model, tokenizer, rankings, config, device="cpu")
    train_s = time.perf_counter() - started

    # The tokens the trainer computed: rebuild its batches (cheap) and measure each packed row.
    # Under the segment attention the linear layers see the real tokens only (one flat row),
    # and only attention the padded rows.
    collate = RankingCollator(
        tokenizer, eoc_token_id=model.eoc_token_id, max_length=args.max_length, pack=True
    )
    lengths = [max(len(text) for text in r.texts()) for r in rankings]
    sampler = LengthGroupedBatchSampler(lengths, args.batch_size, seed=args.seed)
    batches = sampler.batches(0)[: result.steps]
    pairs = sum(len(batch) for batch in batches)
    tokens = padded = 0
    flops = 0.0
    for batch_indices in batches:
        batch = collate([rankings[i] for i in batch_indices])
        width = batch["input_ids"].shape[1]
        rows = batch["reward_index"][:, 0]
        ends = [batch["reward_index"][rows == row, 1].max().item() + 1 for row in rows.unique()]
        tokens += sum(ends)
        padded += width * len(ends)
        flops += sum(transformer_flops_per_token(model.backbone.config, end) * end for end in ends)

    started = time.perf_counter()
    correct = pm_pair_correct(model, tokenizer, held_out, args)
    eval_s = time.perf_counter() - started
    return {
        "trainer": f"ours (training.loop, packed, {attention}"
        + (", compiled layers)" if compiled else ")"),
        "pairs": pairs,
        "steps": result.steps,
        "train_s": train_s,
        "pairs_per_s": pairs / train_s,
        "tokens": tokens,
        "tokens_per_pair": tokens / pairs,
        "padded_tokens": padded,
        "attention": attention,
        "compiled_layers": compiled,
        "linear_layer_tokens": tokens if attention == SEGMENT_ATTENTION else padded,
        "model_flops": flops,
        "achieved_flops_per_s": flops / train_s,
        "final_loss": result.history[-1]["loss"],
        "held_out": accuracy_with_ci(correct),
        "eval_s": eval_s,
        "load_average_before": load_before,
    }


def pm_pair_correct(model, tokenizer, held_out: list, args) -> list[bool]:
    """Chosen scored above rejected, per held-out pair, on the same token rows TRL gets."""
    import torch

    from assistant.pm import _pad

    model.eval()
    chosen = token_rows(
        tokenizer, [r.texts()[0] for r in held_out], model.eoc_token_id, args.max_length
    )
    rejected = token_rows(
        tokenizer, [r.texts()[1] for r in held_out], model.eoc_token_id, args.max_length
    )
    return _score_pairs(
        lambda rows: model(**_pad(rows, tokenizer.pad_token_id, "right")),
        chosen,
        rejected,
        args.batch_size,
        torch,
        args.bf16,
    )


def _score_pairs(score, chosen, rejected, batch_size, torch, bf16) -> list[bool]:
    from assistant.hardware import bf16_autocast

    correct = []
    with torch.inference_mode(), bf16_autocast(bf16, "cpu"):
        for start in range(0, len(chosen), batch_size):
            a = score(chosen[start : start + batch_size]).float()
            b = score(rejected[start : start + batch_size]).float()
            correct += (a > b).tolist()
    return correct


# --- TRL ----------------------------------------------------------------------------------------


def run_trl(folder: Path, train: list, held_out: list, args, pairs: int) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from evals.stats import accuracy_with_ci

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder,
        num_labels=1,
        local_files_only=True,
        dtype=torch.float32,
        attn_implementation=args.trl_attention,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    end = tokenizer.eos_token_id
    if end == tokenizer.pad_token_id:
        raise SystemExit("the backbone's pad token equals EOS: TRL would read the wrong position")
    train = train[:pairs]  # the same pairs our epoch used
    data = Dataset.from_dict(
        {
            "chosen_ids": token_rows(
                tokenizer, [r.texts()[0] for r in train], end, args.max_length
            ),
            "rejected_ids": token_rows(
                tokenizer, [r.texts()[1] for r in train], end, args.max_length
            ),
        }
    )
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(
            output_dir=out,
            # --trl-micro-batch splits each batch into micro-batches (the same effective batch,
            # the loss averaged over all its pairs) where TRL's padded rows outgrow the memory.
            per_device_train_batch_size=args.trl_micro_batch or args.batch_size,
            gradient_accumulation_steps=args.batch_size
            // (args.trl_micro_batch or args.batch_size),
            learning_rate=args.lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            num_train_epochs=1,
            bf16=args.bf16,  # resolved in main: the same path as ours
            use_cpu=True,
            max_length=args.max_length,
            gradient_checkpointing=False,
            save_strategy="no",
            logging_steps=50,
            report_to="none",
            seed=args.seed,
            dataloader_num_workers=0,
        )
        trainer = RewardTrainer(
            model=model, args=config, train_dataset=data, processing_class=tokenizer
        )
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        output = trainer.train()
        train_s = time.perf_counter() - started
    model.eval()
    chosen = token_rows(tokenizer, [r.texts()[0] for r in held_out], end, args.max_length)
    rejected = token_rows(tokenizer, [r.texts()[1] for r in held_out], end, args.max_length)

    def score(rows):
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)

    started = time.perf_counter()
    correct = _score_pairs(score, chosen, rejected, args.batch_size, torch, args.bf16)
    eval_s = time.perf_counter() - started
    n_tokens = sum(len(row) for column in ("chosen_ids", "rejected_ids") for row in data[column])
    return {
        "trainer": f"TRL {trl.__version__} RewardTrainer ({args.trl_attention}"
        + (f", micro-batch {args.trl_micro_batch}" if args.trl_micro_batch else "")
        + ")",
        "pairs": len(train),
        "steps": output.global_step,
        "train_s": train_s,
        "pairs_per_s": len(train) / train_s,
        "tokens": n_tokens,
        "tokens_per_pair": n_tokens / len(train),
        "final_loss": output.training_loss,
        "held_out": accuracy_with_ci(correct),
        "eval_s": eval_s,
        "load_average_before": load_before,
    }


def run_in_a_process(args, *, trl_pairs: int | None = None) -> dict:
    """Ours (trl_pairs None) or TRL on the first `trl_pairs` pairs, in a fresh process of its
    own: each starts with the memory the other held given back, and its peak is its own. (Ours
    in this process kept ~11 GB after training, and TRL's child beside it was OOM-killed.)"""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        role = ["--ours-only"] if trl_pairs is None else ["--trl-only-pairs", str(trl_pairs)]
        command = [sys.executable, __file__, *role, "--json", str(out)]
        for name in (
            "models_dir",
            "hh_file",
            "train_pairs",
            "held_out_pairs",
            "max_length",
            "batch_size",
            "lr",
            "weight_decay",
            "warmup_steps",
            "seed",
            "threads",
            "trl_attention",
            "trl_micro_batch",
            "bf16",
        ):
            value = getattr(args, name)
            if value is not None:
                command += [f"--{name.replace('_', '-')}", str(value)]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def report_lines(ours: dict, trl: dict, peak: float, args) -> list[str]:
    def acc(row):
        h = row["held_out"]
        return f"{h['accuracy']:.3f} [{h['low']:.3f}, {h['high']:.3f}] (n={h['n']})"

    return [
        "| trainer | pairs | steps | train (s) | pairs/s | tokens/pair | held-out accuracy "
        "[95% CI] | last loss | peak RSS (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['trainer']} | {r['pairs']} | {r['steps']} | {r['train_s']:.0f} | "
            f"{r['pairs_per_s']:.2f} | {r['tokens_per_pair']:.0f} | {acc(r)} | "
            f"{r['final_loss']:.3f} | {r.get('peak_rss_mb', 0):,.0f} |"
            for r in (ours, trl)
        ),
        "",
        f"ratio (ours / TRL pairs/s): {ours['pairs_per_s'] / trl['pairs_per_s']:.2f}x; "
        f"our MFU: {ours['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s of a measured "
        f"{peak / 1e9:.0f} GFLOP/s {'bf16' if args.bf16 else 'float32'} matmul peak = "
        f"{ours['achieved_flops_per_s'] / peak:.1%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--models-dir", type=Path, default=var_dir / "bench-models")
    parser.add_argument("--hh-file", type=Path, default=HH_FILE)
    parser.add_argument("--train-pairs", type=int, default=None, help="default: all 1,849")
    parser.add_argument("--held-out-pairs", type=int, default=None, help="default: all 463")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--trl-attention",
        default="sdpa",
        choices=["eager", "sdpa"],
        help="TRL's attention kernel: its default, SDPA (eager ran out of 24 GB at batch 8)",
    )
    parser.add_argument(
        "--trl-micro-batch",
        type=int,
        help="TRL's micro-batch, with gradient accumulation up to --batch-size (default: none)",
    )
    parser.add_argument(
        "--bf16",
        default="auto",
        choices=["auto", "on", "off", "True", "False"],
        help="autocast both trainers to bf16: auto (default) = where this CPU computes it natively",
    )
    parser.add_argument("--trl-only-pairs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-trl", action="store_true", help="ours only (the accuracy run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.trl_micro_batch and args.batch_size % args.trl_micro_batch:
        parser.error("--trl-micro-batch must divide --batch-size")

    import torch

    from assistant.default_model import ensure_default_model
    from assistant.hardware import bf16_path, bf16_warning, resolve_bf16

    # One path for both trainers, resolved here (the TRL child gets True or False).
    requested = {"auto": "auto", "on": True, "True": True}.get(args.bf16, False)
    args.bf16 = resolve_bf16(requested, "cpu")
    if warning := bf16_warning(requested, "cpu"):
        print(warning, file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    folder = ensure_default_model(args.models_dir)  # converted once, not timed
    train, held_out = hh_split(args.hh_file)
    train = [to_ranking(row) for row in train[: args.train_pairs]]
    held_out = [to_ranking(row) for row in held_out[: args.held_out_pairs]]
    if args.trl_only_pairs or args.ours_only:  # a child process of run_in_a_process
        if args.ours_only:
            figures = run_ours(folder, train, held_out, args)
        else:
            figures = run_trl(folder, train, held_out, args, pairs=args.trl_only_pairs)
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        args.json.write_text(json.dumps(figures))
        return
    path = bf16_path(args.bf16, "cpu")
    peak = matmul_peak(args.bf16)
    print(f"{path}: matmul peak {peak / 1e9:.0f} GFLOP/s", file=sys.stderr, flush=True)
    ours = run_in_a_process(args)
    print(json.dumps(ours, indent=1), file=sys.stderr, flush=True)
    # Measured again after training and the larger taken: a busy machine lowers the first.
    peak = max(peak, matmul_peak(args.bf16))
    report = {
        **run_header(args.threads),
        "path": path,
        "matmul_peak_flops": peak,
        "ours": ours,
        "mfu": ours["achieved_flops_per_s"] / peak,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    if not args.skip_trl:
        trl = run_in_a_process(args, trl_pairs=ours["pairs"])
        report["trl"] = trl
        report["ratio"] = ours["pairs_per_s"] / trl["pairs_per_s"]
        print("\n".join(report_lines(ours, trl, peak, args)))
    print(
        f"\n{report['cpu']}, {report['cores']} cores, {args.threads} threads, torch "
        f"{report['torch']}; max_length {args.max_length}, batch {args.batch_size}, lr {args.lr}, "
        f"{path}; 1-min load average {os.getloadavg()[0]:.2f} at the end"
    )
    write_json(args.json, report)


if __name__ == "__main__":
    main()
