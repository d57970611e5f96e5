"""Keep the C heap's freed memory for reuse while a CPU training run lasts, then give it back.

Every step frees and allocates the same large buffers again: the embedding's dense gradient
(vocabulary x hidden, 113 MB in float32 for SmolLM2-135M), the bf16 copies autocast makes of
each weight, the activations. glibc serves a block over its mmap threshold with a fresh mmap and
unmaps it on free, and trims the heap's top when more than 128 kB is free, so each step the
kernel faulted in and zeroed those pages again: 27,649 page faults a step, ~190 ms of a 1.3 s
step on a 2-core EPYC (`bench/pm_training.py`; BENCHMARKS.md). Under `retained_heap` large
blocks come from the heap and freed memory stays mapped (0 faults a step after the first);
on leaving, the defaults are back and `malloc_trim` returns what is free to the system.

glibc only (Linux); elsewhere it does nothing. `mallopt` changes the whole process, so the
runner enters it for the steps only. The cost: the process keeps its peak heap mapped until
the steps end (BENCHMARKS.md, session 12: the whole 1,849-pair run of SmolLM2-135M peaks at
9.8 GB; what made session 11's 20.9 GB was the padded attention's saved scores, not the heap).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

# mallopt(3) parameters and glibc's defaults for them.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 128 * 1024, M_MMAP_MAX: 65536}
RETAINED = {
    M_MMAP_MAX: 0,  # every block from the heap, so a freed one is reused, not unmapped
    M_TRIM_THRESHOLD: -1,  # never trim: glibc reads the int as a size_t, -1 is SIZE_MAX
    M_TOP_PAD: 256 * 2**20,  # grow the heap in 256 MB steps: fewer brk calls
}


@functools.cache
def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None  # musl, macOS: other allocators, other rules
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def available() -> bool:
    """Whether this process's C library is glibc, whose heap `retained_heap` tunes."""
    return _glibc() is not None


@contextlib.contextmanager
def retained_heap(enabled: bool = True):
    """Inside: large blocks from the heap and no trimming. After: glibc's defaults again and
    the free memory returned (`malloc_trim(0)`)."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    for parameter, value in RETAINED.items():
        if not libc.mallopt(parameter, value):
            logger.warning("mallopt(%d, %d) refused: the heap is left as it is", parameter, value)
    try:
        yield True
    finally:
        for parameter, value in DEFAULTS.items():
            libc.mallopt(parameter, value)
        libc.malloc_trim(0)
