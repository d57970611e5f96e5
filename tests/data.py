"""Where the suite's data lives.

The eval sets and the HH-RLHF harmless-base test file ship inside the repository (package data
of `evals` and `collection`), so every test that reads them runs on any clone. The large real
sets (Stack Exchange, UKPConvArg1, the Open-Assistant sample) stay outside, in `../shared/data`
or wherever `ALIGNLAB_SHARED_DATA` points: tests that read them carry `@pytest.mark.shared_data`,
skip with a reason when the folder is absent, and fail instead when `ALIGNLAB_REQUIRE_SHARED_DATA`
is set (as `.ci/run` does).
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HHH_DIR = ROOT / "evals" / "data" / "hhh_alignment"
TRUTHFULQA_FILE = ROOT / "evals" / "data" / "truthfulqa" / "mc_task.json"
HH_TEST = ROOT / "collection" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"

SHARED_DATA = Path(os.environ.get("ALIGNLAB_SHARED_DATA") or ROOT.parent / "shared" / "data")
STACKEXCHANGE_SITES = SHARED_DATA / "stackexchange_small_sites"
UKP = SHARED_DATA / "ukpconvarg1" / "UKPConvArg1Strict-CSV"
OASST = SHARED_DATA / "oasst1_sample" / "en_100_tree.jsonl"
