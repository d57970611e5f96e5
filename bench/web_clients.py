"""The simulated contractors of bench/web_load.py, in their own process (`web_load.py clients`;
no Django here): each signs in through the login form, then loops: think, POST a judgement of
the turn the review page shows, and read the next turn with the "recorded" message that
confirms the submit, with an async HTTP client (aiohttp).

As the browser does it, the POST is htmx's (the review form is boosted): its answer is the next
turn. With `htmx` off in the config the POST is a plain form's, as without JavaScript: a
redirect, then a GET of the review page. A server that answers an htmx POST with a redirect is
followed the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REVIEW_PATH = "/collect/review/"
TURN_RE = re.compile(r'action="/collect/review/(\d+)/judge/"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
RESPONSE_RE = re.compile(r'data-response-id="(\d+)"')
RECORDED = "your judgement is recorded"
EMPTY_QUEUE = "Nothing to review right now"
MAX_ERRORS_IN_A_ROW = 20  # a contractor that keeps failing stops (and says so)


# --- The simulated contractors (their own process; no Django here) ---------------------------


@dataclass
class ClientStats:
    started: float = 0.0  # perf_counter at the start of the measured window
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"login": [], "submit": [], "load": [], "submit_next": []}
    )
    confirmed: list[tuple[str, int, float]] = field(default_factory=list)
    submitted: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}"[:300])


class Contractor:
    """One simulated contractor: a session (cookie jar) and the page it is looking at."""

    def __init__(self, session, config: dict, username: str, stats: ClientStats, rng):
        self.session, self.config, self.username, self.stats = session, config, username, stats
        self.rng = rng
        self.base = config["url"]
        # What the browser sends through the TLS proxy: the origin it sees is https.
        self.origin = "https://" + urlsplit(self.base).netloc

    async def request(self, kind: str, method: str, path: str, data=None, headers=None):
        """(status, body, Location) of one timed request; None (an error) when it failed."""
        import aiohttp

        headers = {"Referer": self.origin + path, **(headers or {})}
        if method == "POST":
            headers["Origin"] = self.origin
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, self.base + path, data=data, headers=headers, allow_redirects=False
            ) as response:
                body = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self.stats.error("exception", f"{method} {path}: {type(error).__name__} {error}")
            return None
        self.stats.latencies[kind].append((time.perf_counter() - started) * 1000)
        return response.status, body, response.headers.get("Location", "")

    async def login(self) -> bool:
        got = await self.request("login", "GET", "/accounts/login/")
        token = CSRF_RE.search(got[1]) if got and got[0] == 200 else None
        if token is None:
            self.stats.error("login", f"{self.username}: no login form ({got and got[0]})")
            return False
        form = {
            "csrfmiddlewaretoken": token.group(1),
            "username": self.username,
            "password": self.config["password"],
            "next": REVIEW_PATH,
        }
        got = await self.request("login", "POST", "/accounts/login/", data=form)
        if not got or got[0] != 302 or not got[2].endswith(REVIEW_PATH):
            self.stats.error("login", f"{self.username}: sign-in refused ({got and got[0]})")
            return False
        return True

    async def load_review(self, kind: str = "load"):
        """The review page: (its body, the turn id and CSRF token of its form), or None."""
        got = await self.request(kind, "GET", REVIEW_PATH)
        if got is None:
            return None
        status, body, _ = got
        if status != 200:
            self.stats.error("status", f"GET review: {status}")
            return None
        return self.review_page(body)

    def review_page(self, body: str):
        """(body, turn id, CSRF token) of a review page's judging form, or None (an error)."""
        turn, token = TURN_RE.search(body), CSRF_RE.search(body)
        if turn is None or token is None or len(RESPONSE_RE.findall(body)) != 2:
            kind = "empty_queue" if EMPTY_QUEUE in body else "parse"
            self.stats.error(kind, f"{self.username}: no judging form on the review page")
            return None
        return body, int(turn.group(1)), token.group(1)

    async def submit(self, turn_id: int, token: str, think_ms: int):
        """POST a judgement as the keyboard widget fills the form: a scale point, time spent.
        False when it failed; else the next review page (None: it could not be read) when the
        answer brought it, or True when it was a redirect to the review page."""
        form = {
            "csrfmiddlewaretoken": token,
            "scale": str(self.rng.randint(1, 8)),
            "note": "",
            "time_spent_ms": str(think_ms),
        }
        self.stats.submitted += 1
        headers = None
        if self.config.get("htmx", True):  # what htmx sends for the boosted form
            headers = {
                "HX-Request": "true",
                "HX-Boosted": "true",
                "HX-Current-URL": self.origin + REVIEW_PATH,
            }
        path = f"/collect/review/{turn_id}/judge/"
        got = await self.request("submit", "POST", path, data=form, headers=headers)
        if got is None:
            return False
        status, body, location = got
        if headers and status == 200 and RECORDED in body:
            return self.review_page(body)
        if status != 302 or not location.endswith(REVIEW_PATH):
            error = re.search(r'<p class="error"[^>]*>([^<]+)', body)
            detail = error.group(1) if error else location
            self.stats.error("submit_refused", f"turn {turn_id}: {status} {detail}")
            return False
        return True

    async def work(self, deadline: float) -> None:
        think = self.config["think_s"]
        if think:  # start after a random part of the think time: contractors are not in step
            await asyncio.sleep(self.rng.uniform(0, think))
        page, failures = await self.load_review(), 0
        while time.perf_counter() < deadline and failures < MAX_ERRORS_IN_A_ROW:
            if page is None:
                failures += 1
                await asyncio.sleep(0.2)
                page = await self.load_review()
                continue
            _, turn_id, token = page
            if think:
                await asyncio.sleep(think)
            started = time.perf_counter()
            answer = await self.submit(turn_id, token, int(think * 1000))
            if answer is False:
                page, failures = None, failures + 1
                continue
            page = await self.load_review() if answer is True else answer
            if page is None:
                failures += 1
                continue
            done = time.perf_counter()
            self.stats.latencies["submit_next"].append((done - started) * 1000)
            if RECORDED in page[0]:
                self.stats.confirmed.append((self.username, turn_id, done - self.stats.started))
                failures = 0
            else:
                self.stats.error("not_recorded", f"turn {turn_id}: no confirmation message")
                failures += 1
        if failures >= MAX_ERRORS_IN_A_ROW:
            self.stats.error("gave_up", f"{self.username} after {failures} failures in a row")


async def run_contractors(config: dict) -> dict:
    """Sign every contractor in, then let them all work for `duration_s`."""
    import aiohttp

    stats, rng = ClientStats(), random.Random(config["seed"])
    timeout = aiohttp.ClientTimeout(total=config["timeout_s"])
    sessions = [
        aiohttp.ClientSession(
            # Production cookies are Secure; the proxy in front of the server speaks https.
            cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[config["url"]]),
            headers={"X-Forwarded-Proto": "https"},
            timeout=timeout,
        )
        for _ in config["usernames"]
    ]
    contractors = [
        Contractor(session, config, username, stats, random.Random(rng.random()))
        for session, username in zip(sessions, config["usernames"], strict=True)
    ]
    try:
        gate = asyncio.Semaphore(8)  # password hashing is slow by design: not all at once

        async def login(contractor):
            async with gate:
                return await contractor.login()

        signed_in = await asyncio.gather(*(login(c) for c in contractors))
        working = [c for c, ok in zip(contractors, signed_in, strict=True) if ok]
        print("signed in", flush=True)  # the parent starts counting CPU time here
        load_before = os.getloadavg()[0]
        stats.started = time.perf_counter()
        deadline = stats.started + config["duration_s"]
        await asyncio.gather(*(c.work(deadline) for c in working))
        elapsed = time.perf_counter() - stats.started
    finally:
        await asyncio.gather(*(session.close() for session in sessions))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "contractors": len(contractors),
        "signed_in": len(working),
        "elapsed_s": elapsed,
        "load_average_at_start": load_before,
        "latencies_ms": stats.latencies,
        "confirmed": stats.confirmed,
        "submitted": stats.submitted,
        "errors": dict(stats.errors),
        "error_examples": stats.examples,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def clients_main() -> None:
    """`web_load.py clients`: read the phase's config (JSON) on stdin, write results to its out."""
    config = json.loads(sys.stdin.read())
    results = asyncio.run(run_contractors(config))
    Path(config["out"]).write_text(json.dumps(results))
