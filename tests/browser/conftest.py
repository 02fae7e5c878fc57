"""The real-browser tests (DESIGN 10, issue 14 point 5): Debian's Chromium, driven by Playwright's
Python package through `executable_path` (Playwright's own browser download cannot work here),
against one `gatehouse serve` on the real services for the whole package.

What is here:
- `gatehouse`: `gatehouse serve` on PostgreSQL (a database of its own), Redis (a database of its
  own), Kafka and an SMTP sink, at `http://localhost:<port>` (the passkeys' relying party is
  `localhost`), rate limits off, SMS and WhatsApp through a local server standing in for Twilio
  (`twilio`: it keeps every message, so SMS codes are read there, and refuses the numbers a test
  asks it to), `GATEHOUSE_UI_RETURN_TO` listing the origin of `app`, a second local server (an
  application page for `return_to`, and the other site of the cross-site posts). Started by
  `harness.serve_gatehouse`, which a module may call for a server of its own with other settings
  (`test_reauth_and_refusals.py`: a short step-up window, one tight limit, a Redis it can stop).
- `browse(size, lang)`: a new browser context (phone 390x844 or desktop 1280x800; Accept-Language
  en or es) and its page, as a `Visitor` with the helpers: `shoot` (a PNG under the artefacts),
  `axe` (axe-core in the page: fails on a serious or critical violation, prints them all),
  `authenticator` (Chromium's virtual authenticator through the DevTools protocol), `reload_free`
  (a marker that a page never reloaded). Every context is closed after the test; a failed test
  leaves a screenshot of each of its pages under `failures/` (`harness.visitors`, which a module
  with a server of its own uses for a `browse` on it).
- `mail` and `twilio`: `mail.code(to, after)` / `twilio.code(to, after)`, the code of the first
  message to `to` beyond the first `after` (count before acting with `mail.count(to)`), so that
  the security notices mailed in between never shift a test's count.

Artefacts: `$GATEHOUSE_TEST_ARTIFACTS/browser` when that is set, else `tests/browser/artifacts`
(ignored by git): screenshots, `axe/*.json` and `axe-summary.json`, `serve.log` (and a module's
own server's log, e.g. `serve-strict.log`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.browser.harness import (
    APP_PAGE,
    ARTIFACTS,
    AXE,
    AXE_RUNS,
    CHROMIUM,
    CHROMIUM_ARGS,
    FAILED,
    HERE,
    App,
    FakeTwilio,
    Gatehouse,
    Mailbox,
    TwilioMessage,
    Visitor,
    http_server,
    need,
    serve_gatehouse,
    visitors,
)
from tests.conftest import free_port
from tests.e2e.stack import own_redis_db


@pytest.fixture(scope="package")
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            to = form.get("To", "")
            if to.removeprefix("whatsapp:") in fake.refused:
                status = 400
                answer: dict[str, Any] = {
                    "code": 21211,
                    "message": "The 'To' number is not a valid phone number.",
                    "status": 400,
                }
            else:
                with fake.lock:
                    fake.messages.append(TwilioMessage(to, form.get("From", ""), form["Body"]))
                status = 201
                answer = {"sid": "SM" + os.urandom(16).hex(), "status": "queued"}
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            return None

    with http_server(Handler) as url:
        fake.url = url
        yield fake


@pytest.fixture(scope="package")
def mail() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    sink = Mailbox("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(scope="package")
def app() -> Iterator[App]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = APP_PAGE.format(path=self.path.replace("<", "&lt;")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            return None

    with http_server(Handler) as url:
        yield App(url)


@pytest.fixture(scope="package")
def gatehouse(
    redis_url: str,
    kafka_bootstrap: str,
    postgres_url: str,
    mail: Mailbox,
    twilio: FakeTwilio,
    app: App,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gatehouse]:
    """`gatehouse serve` (production settings) on the real services, rate limits off."""
    with serve_gatehouse(
        redis_db=own_redis_db(redis_url),
        kafka_bootstrap=kafka_bootstrap,
        mail=mail,
        twilio=twilio,
        app=app,
        tmp=tmp_path_factory.mktemp("gatehouse-browser"),
    ) as served:
        yield served


@pytest.fixture(scope="package")
def artifacts() -> Path:
    """The browser tests' artefacts folder, emptied once per run (only this folder)."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    (ARTIFACTS / "axe").mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="package")
def chromium() -> str:
    need(
        Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK),
        f"no Chromium at {CHROMIUM}: `scripts/test` installs Debian's chromium package "
        "(scripts/lib/browser.sh), or set GATEHOUSE_CHROMIUM to a Chromium binary",
    )
    return CHROMIUM


@pytest.fixture(scope="package")
def axe_script() -> Path:
    if not AXE.exists():
        subprocess.run([str(HERE / "install")], check=False, timeout=600)
    need(AXE.exists(), f"no axe-core at {AXE}: run tests/browser/install (needs npm)")
    return AXE


@pytest.fixture(scope="package")
def browser(chromium: str, artifacts: Path, gatehouse: Gatehouse) -> Iterator[Any]:
    """One Chromium for the package (Playwright's synchronous API: the tests are plain
    functions). Its event loop counts as running in this thread from its start to its stop, so
    no `asyncio.run` can happen in between: `gatehouse` (which makes and drops its database with
    one) is set up before it and torn down after it."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()
        summary = [{"page": r.name, "url": r.url, "violations": r.violations} for r in AXE_RUNS]
        if ARTIFACTS.exists():
            (ARTIFACTS / "axe-summary.json").write_text(json.dumps(summary, indent=1))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash.setdefault(FAILED, False)
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture
def browse(
    browser: Any, gatehouse: Gatehouse, axe_script: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Visitor]]:
    """`browse(size="desktop", lang="en")`: a new context and page at that size and language."""
    with visitors(browser, gatehouse.base, axe_script, request) as open_visitor:
        yield open_visitor
