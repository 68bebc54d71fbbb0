"""Headless Chromium (Debian's chromium and chromium-driver) for the tests that check a page as a
person sees it, and the folder their screenshots go to for CI ($CI_ARTIFACTS_DIR)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def headless_chromium(width: int = 1280, height: int = 1600):
    """A selenium driver of headless Chromium. Skips, saying what to install, where selenium or the
    browser is missing; fails instead under CI (CI set), which installs both (.ci/run)."""
    def unavailable(reason: str):
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]'): no browser to check the page in")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        unavailable("headless Chromium not found: `apt-get install -y chromium chromium-driver` "
                    f"(chromium: {chromium}, chromedriver: {driver})")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # No sandbox: CI runs as root in a container. No background networking: nothing outside
    # 127.0.0.1 is reached (update checks, component downloads).
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def save_screenshot(browser, name: str, min_height: int = 0) -> Path:
    """The browser's window as $CI_ARTIFACTS_DIR/<name> (default artifacts/), checked not blank."""
    from PIL import Image

    folder = Path(os.environ.get("CI_ARTIFACTS_DIR") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    assert browser.save_screenshot(str(shot)), f"could not write {shot}"
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    # A blank or all-one-colour page has (almost) no variance; text, tables and figures have plenty.
    assert pixels.shape[0] > min_height and pixels.var() > 200, \
        f"{shot} looks blank ({pixels.shape[0]} px high, variance {pixels.var():.0f})"
    return shot
