"""Real Chromium (Debian's package) driven by Playwright, for tests against a live server."""

import os
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialing out of this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page(**context_options):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls
    # made while one runs; the test's own ORM calls between page actions are synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with _browser(sync_playwright, context_options) as page:
            yield page
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextmanager
def _browser(sync_playwright, context_options):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(**context_options)
            context.set_default_timeout(30_000)
            # Whatever our Content-Security-Policy blocks is a bug; Chromium logs each to the
            # console ("... violates the following Content Security Policy directive ...").
            page = context.new_page()
            violations = []

            def note_violation(message):
                if CSP in message.text:
                    violations.append(message.text)

            page.on("console", note_violation)
            yield page
            assert not violations, f"blocked by the Content-Security-Policy: {violations}"
        finally:
            browser.close()


CSP = "Content Security Policy"


def sign_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
