"""Running work in many threads at once, for the race tests (PostgreSQL)."""

import threading

from django.db import connection

AT_ONCE = 40


def at_once(work, count=AT_ONCE) -> list:
    """Run `work(i)` for i < count in as many threads, started together; what each returned or
    raised, in order."""
    barrier = threading.Barrier(count)
    outcomes = [None] * count

    def run(i):
        try:
            barrier.wait(timeout=30)
            outcomes[i] = work(i)
        except Exception as error:  # the refusals are the point; anything else fails below
            outcomes[i] = error
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    return outcomes
