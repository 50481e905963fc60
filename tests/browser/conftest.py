"""The web page in a real browser: Debian's Chromium, headless, driven by
Selenium through Debian's chromedriver (tests/lab/chromium installs both;
nothing is downloaded at test time), against real daemons.

A browser cannot open a Unix socket: :func:`tunnel` forwards a loopback port
to one (:class:`virtpolicy.testing.tunnel.Tunnel`), as ``ssh -L
PORT:/run/virtpolicy/virtpolicy.sock`` does for a user.
Screenshots go to ``$VIRTPOLICY_ARTEFACTS`` (default ``build/screenshots``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NODE, Daemon, wait_connected
from virtpolicy.testing.tunnel import Tunnel

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTEFACTS = Path(os.environ.get("VIRTPOLICY_ARTEFACTS", "build/screenshots"))


def shot(driver: object, name: str) -> Path:
    """Save a screenshot of the page as it is now, as an artefact ``name``.png."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


@pytest.fixture
def tunnel() -> Iterator[Callable[[Path], str]]:
    """``tunnel(socket_path)``: an http://127.0.0.1:PORT URL that reaches it."""
    opened: list[Tunnel] = []

    def open_tunnel(path: Path) -> str:
        opened.append(Tunnel(path))
        return opened[-1].url

    yield open_tunnel
    for t in opened:
        t.close()


#: ``served(*serve_args, uri=..., socket=...)``: a connected daemon and its page's URL.
Served = Callable[..., tuple[Daemon, str]]


@pytest.fixture
def served(start_daemon: Callable[..., Daemon], tunnel: Callable[[Path], str], db: str) -> Served:
    """Start `virtpolicy serve` on ``uri`` (default: the test driver with our
    node file), wait until it is connected, and tunnel to its ``socket``."""

    def serve(
        *args: str, uri: str = f"test://{NODE}", socket: str = "virtpolicy.sock"
    ) -> tuple[Daemon, str]:
        daemon = start_daemon(db, "--connect", uri, *args)
        wait_connected(daemon)
        return daemon, tunnel(daemon.run_dir / socket)

    return serve


@pytest.fixture(scope="session")
def _chromium() -> Iterator[list[object]]:
    """One headless Chromium per test process, started when a test first needs
    it (a start and a quit cost about a second of CPU each, and some fifteen
    tests use one): a list holding the driver, so that one that broke is
    replaced (see :func:`browser`)."""
    held: list[object] = []
    yield held
    for driver in held:
        driver.quit()  # type: ignore[attr-defined]
    for profile in _PROFILES:
        shutil.rmtree(profile, ignore_errors=True)


_PROFILES: list[str] = []


def _start_chromium() -> object:
    """A headless Chromium at 1280x800 with a throwaway profile."""
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    profile = tempfile.mkdtemp(prefix="vp-chromium-")
    _PROFILES.append(profile)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root in a container; the profile is throwaway
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--ignore-certificate-errors",  # the tests' self-signed certificate
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    return driver


WINDOW = (1280, 800)


def _fresh(driver: Any) -> bool:
    """Leave nothing of the last test in the browser: a blank page, the window
    at its size, no cookie, no cache (each test's pages come from a port of its
    own, so their storage is their own already). False if it does not answer."""
    try:
        driver.get("about:blank")
        driver.set_window_size(*WINDOW)
        driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    except Exception:  # a browser that does not answer is replaced
        return False
    return True


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, start_daemon: object, _chromium: list[Any]
) -> Iterator[object]:
    """This process's headless Chromium (see :func:`_chromium`), as fresh as a
    new one (:func:`_fresh`); a screenshot of where it ended is saved as an
    artefact, named after the test (taken before the test's daemons stop: this
    fixture comes after theirs)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("VIRTPOLICY_REQUIRE_LAB"):
            pytest.fail("no chromium: run tests/lab/chromium up (as root)")
        pytest.skip("no chromium: run tests/lab/chromium up (as root)")
    if _chromium and not _fresh(_chromium[0]):
        with contextlib.suppress(Exception):
            _chromium.pop().quit()
    if not _chromium:
        _chromium.append(_start_chromium())
    driver = _chromium[0]
    try:
        yield driver
    finally:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):  # a browser that broke: replaced next time
            driver.save_screenshot(str(ARTEFACTS / f"{request.node.name}.png"))
