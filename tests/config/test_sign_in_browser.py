"""A newcomer opens the site in a real browser, sees the sign-in page and signs in."""

import pytest

from tests.browser import chromium_page, sign_in

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
def test_a_contractor_signs_in_and_out_in_chromium(live_server, alice, artifacts_dir):
    with chromium_page(viewport={"width": 390, "height": 800}) as page:  # a phone-sized screen
        page.goto(live_server.url + "/")
        assert page.url.startswith(live_server.url + "/accounts/login/")
        assert page.locator("h1").inner_text() == "Sign in"

        page.fill("#id_username", "alice")
        page.fill("#id_password", "wrong")
        page.click("button[type=submit]")
        assert "didn't match" in page.locator(".error").inner_text()

        sign_in(page, live_server.url, "alice", "pw-alice")
        page.wait_for_url(live_server.url + "/collect/")
        assert page.locator("h1").inner_text() == "Welcome, alice"
        assert page.locator("nav a").all_inner_texts() == ["Collect"]
        assert page.evaluate("typeof htmx") == "object"  # htmx loaded from our own static files
        page.screenshot(path=str(artifacts_dir / "sign-in-contractor.png"), full_page=True)

        page.click("text=Sign out")
        page.wait_for_url(live_server.url + "/accounts/login/")
