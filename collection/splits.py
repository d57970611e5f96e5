"""The train / held-out split, by conversation so that no conversation straddles the two.

A conversation is held out when ``int(sha256(str(conversation_id)).hexdigest(), 16) % 10 == 0``:
a fixed tenth, the same in every snapshot, export and training run.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "held_out", "all")


def held_out(conversation_id: int) -> bool:
    """The split rule: a tenth of conversations, chosen by a hash of the id, is held out."""
    return int(hashlib.sha256(f"{conversation_id}".encode()).hexdigest(), 16) % 10 == 0


def split_of(conversation_id: int) -> str:
    return "held_out" if held_out(conversation_id) else "train"
