"""The whole login in a real browser: headless Chromium clicks the fake TikTok's buttons.

``tiktok-audiences auth login --no-browser`` runs as a subprocess against the fake TikTok
served over HTTP; the consent URL it prints is opened in Debian's Chromium, driven by
Selenium through Debian's chromedriver (given explicitly, with ``SE_OFFLINE=true``, so
nothing is downloaded). Approve must leave a 0600 token file; Deny and a forged
``state`` must end with one clear line and no token file.

Without /usr/bin/chromium or /usr/bin/chromedriver these tests are skipped, unless
``REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs both), where they fail.
"""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from oauth_support import ADVERTISER, APP_ID, APP_SECRET, OTHER_ADVERTISER, oauth_fake

from destination.fake_server import FakeTikTok, serve_in_thread
from tests.clock import HANG_GUARD

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # reported by the ``chrome`` fixture
    webdriver = None

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package})"
    if webdriver is None:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    problem = _missing()
    if problem is not None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(f"no headless browser: {problem}")
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="tiktok-audiences-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
        driver.set_page_load_timeout(HANG_GUARD)
        try:
            yield driver
        finally:
            driver.quit()
            if previous is None:
                os.environ.pop("SE_OFFLINE", None)
            else:
                os.environ["SE_OFFLINE"] = previous


@dataclass
class Login:
    """A running ``auth login --no-browser`` subprocess and what it printed."""

    process: subprocess.Popen[str]
    store: Path
    url: str = ""
    stderr: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start_reading(self) -> None:
        def pump() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            line = self._lines.get(timeout=HANG_GUARD)
            assert line is not None, "auth login ended before printing a URL:\n" + "".join(
                self.stderr
            )
            self.stderr.append(line)
            if line.startswith("http"):
                self.url = line.strip()
                return

    def finish(self) -> tuple[int, str, str]:
        code = self.process.wait(timeout=HANG_GUARD)
        while (line := self._lines.get(timeout=HANG_GUARD)) is not None:
            self.stderr.append(line)
        assert self.process.stdout is not None
        return code, self.process.stdout.read(), "".join(self.stderr)


@pytest.fixture
def fake() -> Iterator[tuple[FakeTikTok, str]]:
    fake = oauth_fake()
    with serve_in_thread(fake) as server:
        yield fake, server.base_url


@pytest.fixture
def start_login(fake: tuple[FakeTikTok, str], tmp_path: Path) -> Iterator[Any]:
    started: list[Login] = []

    def start() -> Login:
        base_url = fake[1]
        config = tmp_path / "config"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TIKTOK_APP_SECRET": APP_SECRET,
            "TIKTOK_API_BASE_URL": base_url,
            "TIKTOK_AUTH_URL": f"{base_url}/portal/auth",
            "XDG_CONFIG_HOME": str(config),
        }
        command = [sys.executable, "-m", "destination", "auth", "login", "--app-id", APP_ID]
        process = subprocess.Popen(
            [*command, "--no-browser", "--port", "0", "--timeout", str(HANG_GUARD)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        login = Login(process, config / "tiktok-audiences" / "tokens.json")
        started.append(login)
        login.start_reading()
        return login

    yield start
    for login in started:
        if login.process.poll() is None:
            login.process.kill()
            login.process.wait()


def callback_message(driver: Any) -> str:
    element = WebDriverWait(driver, HANG_GUARD).until(
        expected_conditions.presence_of_element_located((By.ID, "message"))
    )
    return str(element.text)


def click(driver: Any, button: str) -> None:
    driver.find_element(By.ID, button).click()


def test_approve_in_chromium_stores_a_private_token_for_the_advertisers(
    chrome: Any, fake: tuple[FakeTikTok, str], start_login: Any
) -> None:
    login = start_login()
    chrome.get(login.url)
    assert "Shoes" in chrome.page_source

    click(chrome, "approve")

    assert "return to the terminal" in callback_message(chrome)
    code, stdout, stderr = login.finish()
    assert code == 0, stderr
    assert f"Connected app {APP_ID} for 2 advertiser(s)" in stdout
    assert stat.S_IMODE(login.store.stat().st_mode) == 0o600
    stored = json.loads(login.store.read_text("utf-8"))["apps"][APP_ID]
    assert stored["access_token"] == fake[0].issued_tokens(APP_ID)[0]
    assert stored["advertiser_ids"] == [ADVERTISER, OTHER_ADVERTISER]
    assert stored["access_token"] not in stdout + stderr


def test_deny_in_chromium_ends_with_a_clear_message_and_no_token(
    chrome: Any, fake: tuple[FakeTikTok, str], start_login: Any
) -> None:
    login = start_login()
    chrome.get(login.url)

    click(chrome, "deny")

    assert "you pressed Deny" in callback_message(chrome)
    code, stdout, stderr = login.finish()
    assert code == 4
    assert stdout == ""
    (error,) = [line for line in stderr.splitlines() if line.startswith("tiktok-audiences: ")]
    assert "authorization was denied in TikTok's consent page (you pressed Deny)" in error
    assert not login.store.exists()
    assert fake[0].issued_tokens(APP_ID) == []


def test_a_forged_state_in_chromium_ends_with_a_clear_message_and_no_token(
    chrome: Any, fake: tuple[FakeTikTok, str], start_login: Any
) -> None:
    login = start_login()
    redirect_uri = parse_qs(urlsplit(login.url).query)["redirect_uri"][0]

    chrome.get(f"{redirect_uri}?auth_code=stolen-code&state=forged-state")

    assert "state does not match" in callback_message(chrome)
    code, stdout, stderr = login.finish()
    assert code == 4
    assert stdout == ""
    (error,) = [line for line in stderr.splitlines() if line.startswith("tiktok-audiences: ")]
    assert "does not belong to this login (its state does not match" in error
    assert not login.store.exists()
    assert fake[0].requests == []  # no code was exchanged
