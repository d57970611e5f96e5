"""The four experiments of Askell et al. 2021 ("A General Language Assistant as a Laboratory
for Alignment"), as definitions `manage.py repro` starts, at two scales.

`small` fits a 2-core CPU in under an hour, whichever CPU: with native bf16, and AVX2-only,
where float32 is the fast path (bf16 stays "auto": assistant.hardware picks per machine). Its
choices, printed in every report's setup: the default LM (SmolLM2-135M) as the PM backbone too
(the MiniLM encoder package is not a dependency, and the code loads LM backbones already),
96 tokens per transcript (the end of it: the last turns, where the two responses differ), one
seed, training sizes 64 and 256 (nested), PMP on 256 pairs, every PM's HHH eval on all 221
items, the LMs' HHH evals on the first 6 items of each category, context distillation for 24
steps with its held-out KL on 16 conversations.
`paper` is for a GPU machine: every size up to the whole split, three seeds, full lengths.

The claims: F1 condenses the abstract's sentences; the others are paraphrased (sections given).
"""

from __future__ import annotations

SCALES = {
    "small": {
        "sizes": [64, 256],
        "seeds": [0],
        "max_length": 96,
        "batch_size": 8,
        "lr": 1e-4,
        "pmp_pairs": 256,
        "held_out_limit": 200,
        "lm_hhh_per_category": 6,
        "distill_steps": 24,
        "distill_max_length": 96,
        "distill_eval_conversations": 16,
    },
    "paper": {
        "sizes": [64, 256, 1024, "all"],
        "seeds": [0, 1, 2],
        "max_length": 1024,
        "batch_size": 16,
        "lr": 2e-5,
        "pmp_pairs": 200_000,
        "held_out_limit": None,
        "lm_hhh_per_category": None,
        "distill_steps": 2000,
        "distill_max_length": 1024,
        "distill_eval_conversations": None,
    },
}

CLAIM_F1 = (
    "Ranked preference modeling performs much better than imitation learning; binary "
    "discrimination typically performs and scales very similarly to imitation learning "
    "(Askell et al. 2021, abstract, condensed)."
)
CLAIM_F2 = (
    "Preference-model pre-training improves sample efficiency when finetuning on human "
    "preferences, most at small dataset sizes; binary PMP transfers better than ranked PMP "
    "(Askell et al. 2021, §5, paraphrased)."
)
CLAIM_F3 = (
    "A prompt of helpful, honest and harmless dialogues improves HHH-evaluation accuracy over "
    "the same LM without it (Askell et al. 2021, §2–3, paraphrased)."
)
CLAIM_F4 = (
    "Context distillation performs about as well as prompting: the distilled LM without the "
    "prompt matches the prompted LM (Askell et al. 2021, §3, paraphrased)."
)


def _shared(scale: dict) -> dict:
    return {
        "max_length": scale["max_length"],
        "batch_size": scale["batch_size"],
        "lr": scale["lr"],
        "warmup_steps": 2,
        "epochs": 1,
        "eval_every": 0,
        "checkpoint_every": 0,
    }


def _held_out(scale: dict) -> dict:
    return {"limit": scale["held_out_limit"]} if scale["held_out_limit"] else {}


def _lm_hhh(scale: dict) -> dict:
    per = scale["lm_hhh_per_category"]
    return {"per_category": per} if per else {}


def _finding(claim, test, a, b, **extra) -> dict:
    return {
        "claim": claim,
        "test": test,
        "a": dict(zip(("condition", "eval"), a, strict=True)),
        "b": dict(zip(("condition", "eval"), b, strict=True)),
        **extra,
    }


def f1(scale: str = "small", snapshot: int = 0, backbone: str = "default", **_) -> dict:
    s = SCALES[scale]
    return {
        "name": f"F1 ranked PM vs binary discrimination vs imitation ({scale})",
        "snapshot": snapshot,
        "backbone": backbone,
        "sizes": s["sizes"][-1:] if scale == "small" else s["sizes"],
        "seeds": s["seeds"],
        "config": _shared(s),
        "eval_options": {"held_out": _held_out(s)},
        "conditions": [
            {"name": "ranked PM", "kind": "pm"},
            {"name": "binary discrimination", "kind": "pm_binary"},
            {"name": "imitation learning", "kind": "imitation", "evals": ["hhh_unprompted"]},
        ],
        "findings": [
            _finding(
                CLAIM_F1, "better", ("ranked PM", "held_out"), ("imitation learning", "held_out")
            ),
            _finding(
                CLAIM_F1, "better", ("ranked PM", "held_out"), ("binary discrimination", "held_out")
            ),
        ],
        "notes": "Held-out accuracy of the imitation LM: its training run's own held-out "
        "evaluation (log-likelihood of each response as its score).",
    }


def f2(
    scale: str = "small",
    snapshot: int = 0,
    backbone: str = "default",
    pmp_sources: list | None = None,
    **_,
) -> dict:
    s = SCALES[scale]
    return {
        "name": f"F2 preference-model pre-training: data efficiency ({scale})",
        "snapshot": snapshot,
        "backbone": backbone,
        "sizes": s["sizes"],
        "seeds": s["seeds"],
        "config": _shared(s),
        "eval_options": {"held_out": _held_out(s)},
        "pmp": {
            "sources": pmp_sources or [],
            "config": {
                **_shared(s),
                "lr": 5e-5,
                "binary": True,
                "train_comparisons": s["pmp_pairs"],
            },
        },
        "conditions": [
            {"name": "binary PMP, then finetune", "kind": "pmp_finetune"},
            {"name": "no PMP", "kind": "pm"},
        ],
        "findings": [
            _finding(
                CLAIM_F2,
                "better",
                ("binary PMP, then finetune", "held_out"),
                ("no PMP", "held_out"),
                size="smallest",
            ),
            _finding(
                CLAIM_F2,
                "gain_shrinks",
                ("binary PMP, then finetune", "held_out"),
                ("no PMP", "held_out"),
            ),
        ],
        "notes": "PMP: binary (pairs of answers with different scores), as the paper found best; "
        "ranked PMP is not run at this scale.",
    }


def f3(scale: str = "small", snapshot: int = 0, backbone: str = "default", **_) -> dict:
    s = SCALES[scale]
    return {
        "name": f"F3 the HHH prompt vs no prompt ({scale})",
        "snapshot": snapshot,
        "backbone": backbone,
        "eval_options": {"hhh": _lm_hhh(s), "hhh_unprompted": _lm_hhh(s)},
        "conditions": [{"name": "LM", "kind": "base", "evals": ["hhh", "hhh_unprompted"]}],
        "findings": [
            _finding(CLAIM_F3, "better", ("LM", "hhh"), ("LM", "hhh_unprompted")),
        ],
    }


def f4(scale: str = "small", snapshot: int = 0, backbone: str = "default", **_) -> dict:
    s = SCALES[scale]
    return {
        "name": f"F4 context distillation vs prompting ({scale})",
        "snapshot": snapshot,
        "backbone": backbone,
        "eval_options": {"hhh": _lm_hhh(s), "hhh_unprompted": _lm_hhh(s)},
        "conditions": [
            {"name": "LM", "kind": "base", "evals": ["hhh", "hhh_unprompted"]},
            {
                "name": "distilled LM",
                "kind": "distill",
                "evals": ["hhh_unprompted"],
                "config": {
                    "max_length": s["distill_max_length"],
                    "max_steps": s["distill_steps"],
                    "batch_size": 2,
                    "eval_every": 0,
                    "checkpoint_every": 0,
                    "min_conversations": 16,
                    "eval_conversations": s["distill_eval_conversations"],
                },
            },
        ],
        "findings": [
            _finding(
                CLAIM_F4,
                "not_worse",
                ("distilled LM", "hhh_unprompted"),
                ("LM", "hhh"),
                margin=0.05,
            ),
            _finding(
                CLAIM_F4, "better", ("distilled LM", "hhh_unprompted"), ("LM", "hhh_unprompted")
            ),
        ],
    }


PAPER_EXPERIMENTS = {"F1": f1, "F2": f2, "F3": f3, "F4": f4}
