"""Headless Chromium from Debian (`apt-get install chromium`, which `make system-deps`
does), driven by Playwright with the system executable: Playwright never downloads a
browser here. Screenshots go to test-output/screenshots/, which CI keeps as output."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed: run `make system-deps` (as root)")
    return found


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (a playwright Browser) for the duration of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            # root in a container: Chromium's sandbox needs user namespaces it may not have
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()
