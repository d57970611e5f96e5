"""Waiting for something another process does (a worker, a server), with a deadline."""

import time


def wait_until(predicate, seconds: float, what: str, *, every: float = 0.25):
    """`predicate()`'s first truthy result within `seconds`; else an AssertionError naming
    `what`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
