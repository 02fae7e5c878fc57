"""The browser tests' harness (fixtures in conftest.py): the Chromium launch settings, the SMTP
sink and the stand-in for Twilio read by the tests, the second site, `serve_gatehouse` (a
`gatehouse serve` for the package's fixture, or for a module's own with other settings), a
throwaway `redis-server`, and `Visitor`, one person's browser context with its helpers
(screenshots, axe-core, Chromium's virtual authenticator), opened by `visitors`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from gatehouse.domain.crypto import generate_secrets_document
from tests.conftest import REQUIRED, MailSink, body_of, courier_group_at_end, free_port, unique
from tests.e2e.stack import wait_ready

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("GATEHOUSE_CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the background-networking flags keep it from calling
# Google's hosts, which this closed network refuses. Playwright gives every launch a new, empty
# user-data dir of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
LANGUAGES = {"en": ("en-US", "en-US,en;q=0.9"), "es": ("es-ES", "es-ES,es;q=0.9")}
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
# Only these fail a page; the others are printed and kept in the artefacts.
BLOCKING_IMPACTS = ("serious", "critical")
CODE = re.compile(r"\b(\d{6})\b")
TWILIO_SID, TWILIO_TOKEN = "AC" + "0123456789abcdef" * 2, "twilio-auth-token"
SMS_FROM, WHATSAPP_FROM = "+15005550006", "+14155238886"
TIMEOUT_MS = 15_000  # Playwright's default for every action and expectation here


def artifacts_dir() -> Path:
    root = os.environ.get("GATEHOUSE_TEST_ARTIFACTS")
    return Path(root) / "browser" if root else HERE / "artifacts"


ARTIFACTS = artifacts_dir()


def need(ok: bool, message: str) -> None:
    """Fail (under GATEHOUSE_TEST_REQUIRE_SERVICES=1) or skip when what the tests need is not
    there."""
    if ok:
        return
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message + " (with GATEHOUSE_TEST_REQUIRE_SERVICES=1 this fails instead)")


# --- mail and SMS ---------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`check()` until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: nothing in {timeout}s")
        time.sleep(0.05)
    return found


@dataclass
class Mailbox(MailSink):
    """The SMTP sink of `tests/conftest.py`, read from the (synchronous) browser tests, which
    refuses the recipients in `refused` at RCPT TO (a permanent 550: the delivery fails)."""

    refused: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(_options)
        return "250 OK"

    def count(self, to: str) -> int:
        return len(self.to(to))

    def code(self, to: str, after: int = 0, timeout: float = 30.0) -> str:
        """The code of the first message to `to`, beyond the first `after`, that carries one."""

        def found() -> str | None:
            for message in self.to(to)[after:]:
                if match := CODE.search(body_of(message)):
                    return match.group(1)
            return None

        code: str = wait_for(f"a code mailed to {to}", found, timeout)
        return code


@dataclass
class TwilioMessage:
    to: str
    sender: str
    body: str


@dataclass
class FakeTwilio:
    """Twilio's Messages API on loopback, for the real Twilio SDK of the courier: keeps every
    message; answers 400 (error 21211, a permanent failure: the courier falls back to the next
    channel) for the numbers in `refused`."""

    url: str
    messages: list[TwilioMessage] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, number: str) -> list[TwilioMessage]:
        with self.lock:
            return [m for m in self.messages if m.to.removeprefix("whatsapp:") == number]

    def count(self, number: str) -> int:
        return len(self.to(number))

    def code(self, number: str, after: int = 0, timeout: float = 30.0) -> str:
        def found() -> str | None:
            for message in self.to(number)[after:]:
                if match := CODE.search(message.body):
                    return match.group(1)
            return None

        code: str = wait_for(f"a code sent to {number}", found, timeout)
        return code


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- the other site -------------------------------------------------------------------------


@dataclass
class App:
    """A second origin: the application `return_to` may send people back to (allow-listed in
    GATEHOUSE_UI_RETURN_TO), and the other site a cross-site form post comes from. Every GET
    answers a small page naming the path."""

    url: str


APP_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>Application</title></head>"
    "<body><main><h1>Application home</h1><p id=path>{path}</p></main></body></html>"
)


# --- gatehouse serve ------------------------------------------------------------------------


@dataclass
class Gatehouse:
    base: str  # http://localhost:<port>
    log: Path
    env: dict[str, str]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def in_a_thread(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a thread of its own: `create_database` and `drop_database` use
    `asyncio.run`, which cannot run in this thread while the package's Chromium is up (its
    event loop counts as running here), as it is when a module starts a server of its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(work, *args).result()


@contextlib.contextmanager
def serve_gatehouse(
    *,
    redis_db: contextlib.AbstractContextManager[str],
    kafka_bootstrap: str,
    mail: Mailbox,
    twilio: FakeTwilio,
    app: App,
    tmp: Path,
    log_name: str = "serve.log",
    settings: dict[str, str] | None = None,
) -> Iterator[Gatehouse]:
    """`gatehouse serve` (production settings) on a PostgreSQL database of its own (made and
    migrated here, dropped at the end), the Redis URL `redis_db` gives while entered, Kafka
    (or, with `kafka_bootstrap` empty, the embedded bus), the SMTP sink and the stand-in for
    Twilio, rate limits off; `settings` adds or replaces GATEHOUSE_* variables. Stopped with
    SIGTERM at the end; its log is copied to the artefacts as `log_name`."""
    from tests.integration.conftest import create_database, drop_database

    database, admin = in_a_thread(create_database, "postgres", tmp)  # migrated
    port = free_port()
    secrets = tmp / "secrets.json"
    secrets.write_text(json.dumps(generate_secrets_document()))
    secrets.chmod(0o600)
    log = tmp / "serve.log"
    try:
        with redis_db as redis_url:
            env = {
                "GATEHOUSE_ENV": "production",
                "GATEHOUSE_DATABASE_URL": database,
                "GATEHOUSE_REDIS_URL": redis_url,
                "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "GATEHOUSE_SMTP_URL": mail.url,
                "GATEHOUSE_PORT": str(port),
                "GATEHOUSE_PUBLIC_URL": f"http://localhost:{port}",
                "GATEHOUSE_UI_RETURN_TO": json.dumps([app.url]),
                "GATEHOUSE_SECRETS_FILE": str(secrets),
                "GATEHOUSE_KAFKA_COURIER_GROUP": unique("browser-courier"),
                "GATEHOUSE_RATE_LIMITS": "{}",
                "GATEHOUSE_TWILIO_ACCOUNT_SID": TWILIO_SID,
                "GATEHOUSE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                "GATEHOUSE_TWILIO_SMS_FROM": SMS_FROM,
                "GATEHOUSE_TWILIO_WHATSAPP_FROM": WHATSAPP_FROM,
                "GATEHOUSE_TWILIO_BASE_URL": twilio.url,
                # A refused SMS falls back at once, not after seconds of retries.
                "GATEHOUSE_COURIER_BACKOFF_SECONDS": "0.1",
                **(settings or {}),
            }
            if kafka_bootstrap:
                courier_group_at_end(kafka_bootstrap, env["GATEHOUSE_KAFKA_COURIER_GROUP"])
            process = subprocess.Popen(
                [sys.executable, "-m", "gatehouse", "serve"],
                env={**os.environ, **env},
                cwd=tmp,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            base = f"http://localhost:{port}"
            try:
                wait_ready(base, process, log, timeout=90)
                yield Gatehouse(base, log, env)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, ARTIFACTS / log_name)
    finally:
        in_a_thread(drop_database, database, admin)


@dataclass
class ThrowawayRedis:
    """A `redis-server` of the tests' own on a free loopback port (no persistence), which a test
    may stop (SIGTERM to its PID: Redis is gone, connections refused) and start again on the
    same port; the shared services' Redis is never touched."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        need(binary is not None, "no redis-server: `scripts/services start` installs it")
        assert binary is not None and self.process is None
        self.folder.mkdir(parents=True, exist_ok=True)
        # the options: loopback only, no snapshot, no append-only file, no protected mode
        options = ["--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        options += ["--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "no"]
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen([binary, *options], stdout=log, stderr=subprocess.STDOUT)
        with redis.Redis(host="127.0.0.1", port=self.port) as client:

            def answers() -> bool:
                assert self.process is not None and self.process.poll() is None, "redis exited"
                with contextlib.suppress(redis.RedisError):
                    return bool(client.ping())
                return False

            wait_for(f"redis-server on port {self.port}", answers, timeout=15)

    def stop(self) -> None:
        """SIGTERM to the server this harness started (by its PID), and wait for it to exit."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the browser ----------------------------------------------------------------------------


@dataclass
class AxeRecord:
    name: str
    url: str
    violations: list[dict[str, Any]]


AXE_RUNS: list[AxeRecord] = []


@dataclass
class Authenticator:
    """Chromium's virtual authenticator (the DevTools protocol's WebAuthn domain), attached to
    one page's target: a platform authenticator with resident keys and user verification, which
    answers every prompt at once."""

    cdp: Any
    id: str

    def credentials(self) -> list[dict[str, Any]]:
        answer = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        credentials: list[dict[str, Any]] = answer["credentials"]
        return credentials

    def remove(self) -> None:
        """Take the authenticator away (the device is gone), its credentials with it."""
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.id})


@dataclass
class Visitor:
    """One browser context (a person on one device) and its page. What the page did that no
    journey may need is kept: `dialogs` (alert, confirm, prompt: DESIGN 10 has no step wait on
    a dialog of ours; Playwright dismisses them) and `problems` (uncaught script errors, and
    what the CSP refused); `browse` fails a test that leaves any, unless `tolerate` is set."""

    context: Any
    page: Any
    size: str
    lang: str
    base: str
    axe_path: Path
    dialogs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tolerate: bool = False

    def watch(self) -> None:
        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_console(message: Any) -> None:
            text = message.text
            if message.type == "error" and "Failed to load resource" not in text:
                self.problems.append(f"console: {text}")  # a CSP refusal reads "Refused to ..."

        self.page.on("dialog", on_dialog)
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("console", on_console)

    def url(self, path: str) -> str:
        return self.base + path

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url(path))

    def shoot(self, name: str, *, full_page: bool = True) -> Path:
        """A PNG of the page (whole, or the viewport): `<artefacts>/<name>-<lang>-<size>.png`."""
        path = ARTIFACTS / f"{name}-{self.lang}-{self.size}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def axe(self, name: str, *, fail: bool = True) -> list[dict[str, Any]]:
        """axe-core on the page as it is now. It is loaded as a same-origin script
        (`/__axe-core.js`, answered by `page.route` from node_modules), which the pages' CSP
        (`script-src 'self'`) allows: the CSP stays on, nothing is bypassed. Fails on any
        serious or critical violation (unless not `fail`); every violation is printed and saved
        (`axe/<name>-<lang>-<size>.json`, and `axe-summary.json` at the end)."""
        script = self.axe_path.read_text()

        def serve_axe(route: Any) -> None:
            route.fulfill(status=200, content_type="text/javascript", body=script)

        self.page.route("**/__axe-core.js", serve_axe)
        try:
            if not self.page.evaluate("() => typeof window.axe === 'object'"):
                self.page.add_script_tag(url=self.url("/__axe-core.js"))
        finally:
            self.page.unroute("**/__axe-core.js")
        results = self.page.evaluate(
            """async () => {
                const r = await axe.run(document, {resultTypes: ['violations']});
                return r.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                    nodes: v.nodes.map(n => ({target: n.target, html: n.html,
                                              summary: n.failureSummary})),
                }));
            }"""
        )
        label = f"{name}-{self.lang}-{self.size}"
        AXE_RUNS.append(AxeRecord(label, self.page.url, results))
        (ARTIFACTS / "axe" / f"{label}.json").write_text(json.dumps(results, indent=1))
        for violation in results:
            print(f"axe {label}: [{violation['impact']}] {violation['id']}: {violation['help']}")
            for node in violation["nodes"]:
                print(f"    {node['target']}: {node['html'][:160]}")
        blocking = [v for v in results if v["impact"] in BLOCKING_IMPACTS]
        where = f"axe on {label} ({self.page.url})"
        assert not (fail and blocking), f"{where}: {json.dumps(blocking, indent=1)}"
        return list(results)

    def check(self, name: str) -> None:
        """The page as it is now: screenshot, then axe."""
        self.shoot(name)
        self.axe(name)

    def authenticator(self) -> Authenticator:
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        added = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        return Authenticator(cdp, added["authenticatorId"])

    def mark_no_reload(self) -> None:
        """A marker in the page's JavaScript world: gone if the document is ever reloaded."""
        self.page.evaluate("() => { window.__gatehouseNoReload = true; }")

    def never_reloaded(self) -> bool:
        return bool(self.page.evaluate("() => window.__gatehouseNoReload === true"))


# --- each test's visitors ---------------------------------------------------------------

# Whether a test's call failed (set by conftest's report hook), for `visitors` to leave screenshots.
FAILED = pytest.StashKey[bool]()


@contextlib.contextmanager
def visitors(
    browser: Any, base: str, axe_script: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Visitor]]:
    """`open_visitor(size="desktop", lang="en")`: a new context and page at that size and
    language, on the Gatehouse at `base`; every context is closed at the end (after a
    screenshot of its page when the test failed), and the test fails if a page did what no
    journey may need."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    opened: list[Visitor] = []

    def open_visitor(size: str = "desktop", lang: str = "en") -> Visitor:
        locale, accept = LANGUAGES[lang]
        context = browser.new_context(
            viewport=SIZES[size],
            is_mobile=size == "phone",
            has_touch=size == "phone",
            locale=locale,
            extra_http_headers={"Accept-Language": accept},
        )
        context.set_default_timeout(TIMEOUT_MS)
        visitor = Visitor(context, context.new_page(), size, lang, base, axe_script)
        visitor.watch()
        opened.append(visitor)
        return visitor

    yield open_visitor
    failed = request.node.stash.get(FAILED, False)
    left: list[str] = []
    for n, visitor in enumerate(opened):
        if failed:
            folder = ARTIFACTS / "failures"
            folder.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                visitor.page.screenshot(
                    path=str(folder / f"{request.node.name}-{n}.png"), full_page=True
                )
        visitor.context.close()
        if not visitor.tolerate:
            left += [f"dialog {d}" for d in visitor.dialogs] + visitor.problems
    assert failed or not left, f"the pages did what no journey may need: {left}"
