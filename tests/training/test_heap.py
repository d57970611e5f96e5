"""`training.heap.retained_heap`: a large block freed and taken again inside it costs no page
faults (the heap kept it), outside it the kernel maps and zeroes it afresh each time."""

from __future__ import annotations

import ctypes
import resource

import pytest

from training import heap

pytestmark = pytest.mark.skipif(not heap.available(), reason="glibc only (this C library is not)")

SIZE = 64 * 2**20  # well over glibc's largest mmap threshold (32 MB)
PAGES = SIZE // resource.getpagesize()


def _faults_of_a_cycle(libc) -> int:
    """Page faults of malloc + touch every page + free, for a block of SIZE."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(SIZE)
    assert block
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.fixture
def libc():
    libc = heap._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def test_inside_a_freed_block_is_reused_without_faults(libc):
    with heap.retained_heap() as tuned:
        assert tuned
        _faults_of_a_cycle(libc)  # the first time the heap grows: its pages fault in once
        assert _faults_of_a_cycle(libc) < PAGES // 100


def test_outside_and_after_every_cycle_maps_the_block_afresh(libc):
    assert _faults_of_a_cycle(libc) > PAGES // 2
    with heap.retained_heap():
        _faults_of_a_cycle(libc)
    # The defaults are back (the block is mmapped again) and the kept memory was trimmed.
    assert _faults_of_a_cycle(libc) > PAGES // 2


def test_disabled_it_changes_nothing(libc):
    with heap.retained_heap(enabled=False) as tuned:
        assert not tuned
        assert _faults_of_a_cycle(libc) > PAGES // 2
