"""A real headless Chromium for the HTML report's tests: Debian's `chromium` package driven by Playwright's Python
package (Playwright's own browser download is not used: it needs network access this project does not assume).

The executable is $LLM2LLM_CHROMIUM, else the first of chromium, chromium-browser, chromium-headless-shell on PATH.
Without one (or without Playwright) the tests skip, saying why; under CI (LLM2LLM_CI=1, set by .ci/run, which installs
the browser) they fail instead, so a missing browser never passes silently.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

# Headless, sandbox off (containers run as root), and nothing the browser would fetch on its own.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """The Chromium executable, or a skip (a failure under CI) saying what to install."""
    found = os.environ.get("LLM2LLM_CHROMIUM") or next(
        (path for name in ("chromium", "chromium-browser", "chromium-headless-shell") if (path := shutil.which(name))), None)
    missing = None
    if not found:
        missing = "no Chromium (apt-get install chromium, or set LLM2LLM_CHROMIUM)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "Playwright's Python package is not installed (pip install 'llm2llm[test]')"
    if missing:
        if os.environ.get("LLM2LLM_CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return found


@contextmanager
def page_for(html_file: Path, profile: Path, width: int = 1200, height: int = 900) -> Iterator[tuple[object, list[str], list[str]]]:
    """A browser page showing html_file; also the URLs it requested and the script errors it raised."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    requests, errors = [], []
    with sync_playwright() as playwright:
        # A fresh profile per test: nothing from another run of the browser leaks in. Its home, config and cache
        # folders too (crash-report settings, dconf), which it would otherwise write under ~ whatever the profile.
        home = {"HOME": str(profile / "home"), "XDG_CONFIG_HOME": str(profile / "config"), "XDG_CACHE_HOME": str(profile / "cache")}
        context = playwright.chromium.launch_persistent_context(
            str(profile / "profile"), executable_path=executable, headless=True, args=FLAGS, env={**os.environ, **home},
            viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(html_file.resolve().as_uri())
            page.wait_for_selector("body[data-ready=true]", timeout=15_000)
            yield page, requests, errors
        finally:
            context.close()
