"""Hand-made preference files for the preference-file suite's tests: the same four pairs as
HH-RLHF transcripts or TRL rows, written as jsonl or Parquet, and a run of the suite on one."""

import json

from assistant.transcripts import render
from evals import services

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


def run_file(version, path, fmt, **extra):
    run = services.eval_run_create(
        suite="preference_file",
        model_version=version,
        pairs_path=str(path),
        pairs_format=fmt,
        **extra,
    )
    return services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))
