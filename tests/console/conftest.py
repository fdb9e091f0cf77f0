"""The console (its own service, pointed at the test stack's gateway), the feedback service, and one headless
Chromium for the whole session (Debian's /usr/bin/chromium driven by Playwright; no browser download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.feedback.conftest import feedback  # noqa: F401  (the arena, votes, A/B and adapter routes)
from tests.support.processes import Process, free_port, python_module, wait_healthy

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("TUTORSTACK_TEST_ARTIFACTS", "outputs/test-artifacts")) / "console"


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def console_url(stack, feedback):  # noqa: F811
    port = free_port()
    env = {**os.environ, "APP_ENV": "test", "CONSOLE_PORT": str(port), "CONSOLE_GATEWAY_URL": stack.gateway_url,
           "CONSOLE_METRICS_TARGETS": f"gateway={stack.gateway_url}/metrics,ai_service={stack.ai_service_url}/metrics",
           "CONSOLE_METRICS_INTERVAL_SEC": "1"}
    proc = Process("console", python_module("services.console"), env, stack.session_dir)
    wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, 60)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


# Module scope (all browser tests live in one module, so Chromium still starts once): Playwright's
# sync API keeps an event loop running in the main thread while it is open, which would break every
# later test that calls asyncio.run().
@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.fail("chromium is not installed (scripts/setup.sh installs Debian's chromium and chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
