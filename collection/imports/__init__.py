"""Importing preference data: files in a public format become campaigns of judged turns.

- `formats`: the registry, format name → parser, over one module per format (`hh_rlhf`,
  `oasst`, `trl`), each turning a JSON record into `ImportItem`s (`items`);
- `reading`: a jsonl or jsonl.gz file, line by line, every error naming its line;
- `service`: `dataset_import_create`, the all-or-nothing, idempotent import of one file;
- `uploads`: files uploaded from the browser, imported by a worker as an `ImportJob`.

The names below are this package's interface; callers import them from `collection.imports`.
"""

from pathlib import Path

from .service import dataset_import_create
from .uploads import (
    ImportUploadError,
    import_job_create,
    import_job_run,
    import_jobs_sweep,
    upload_max_bytes,
)

# The HH-RLHF harmless-base test split that ships with the code (2,312 pairs; its SOURCE.txt
# says where it comes from): the demo's dataset and the default data of `manage.py repro`.
SHIPPED_HH_RLHF = Path(__file__).resolve().parents[1] / "data/hh-rlhf/harmless-base/test.jsonl.gz"

__all__ = [
    "SHIPPED_HH_RLHF",
    "ImportUploadError",
    "dataset_import_create",
    "import_job_create",
    "import_job_run",
    "import_jobs_sweep",
    "upload_max_bytes",
]
