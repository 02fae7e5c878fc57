"""Fault tests: collected only when named (`scripts/chaos` runs `pytest tests/chaos`), so the main
suite's `pytest tests` does not run them a second time. Their own broker, cluster, databases and
gatehouse processes are stopped and removed by the fixtures, also when a test fails. Each test's
counts and recovery times are printed at the end of the run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

from tests.chaos.services import OwnKafka, OwnPostgres
from tests.conftest import free_port
from tests.e2e.stack import Stack, own_redis_db, wait_ready

CHAOS_DIR = Path(__file__).resolve().parent
REPORT = pytest.StashKey[list[str]]()


def _named(config: pytest.Config) -> bool:
    """True when the command line names this folder or something in it."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == CHAOS_DIR or CHAOS_DIR in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.resolve().parent == CHAOS_DIR and not _named(config):
        return True
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a fault test (scripts/chaos)")
    config.stash[REPORT] = []


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(REPORT, [])
    if lines:
        terminalreporter.section("fault counts and recovery times")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Adds a line to the summary printed after the run (and to the test's output)."""

    def add(line: str) -> None:
        print(line)
        request.config.stash[REPORT].append(f"{request.node.name}: {line}")

    return add


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnKafka]:
    broker = OwnKafka(tmp_path_factory.mktemp("kafka"))
    broker.create()
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    cluster = OwnPostgres()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def chaos_redis(redis_url: str) -> Iterator[str]:
    with own_redis_db(redis_url) as url:
        yield url


@dataclass
class Serve:
    """`gatehouse serve` (api, worker, relay, courier in one process) as a subprocess."""

    stack: Stack
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def courier_group(self) -> str:
        return self.stack.env["GATEHOUSE_KAFKA_COURIER_GROUP"]

    def logs(self) -> str:
        return self.stack.logs()

    def stop(self) -> int:
        return self.stack.stop()["serve"]


ServeFactory = Callable[..., Serve]


@pytest.fixture
def gatehouse_serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """Starts `gatehouse serve` on the given services, waits for /health/ready; stopped at the
    end whatever happens. Sign-ups are cheap and unlimited here: the faults are the subject."""
    started: list[Serve] = []

    def start(database_url: str, redis_url: str, kafka: str, smtp_url: str, **env: str) -> Serve:
        stack = Stack.configure(tmp_path, database_url, redis_url, kafka, smtp_url)
        stack.env.update(
            GATEHOUSE_RATE_LIMITS=json.dumps({}),
            GATEHOUSE_ANSWER_FLOOR_MS="0",
            GATEHOUSE_ARGON2_MEMORY_KIB="1024",
            GATEHOUSE_ARGON2_TIME_COST="1",
            **env,
        )
        serve = Serve(stack, free_port())
        started.append(serve)
        role = stack.start("serve", "serve", serve.port)
        wait_ready(role.url, role.popen, role.log, timeout=120)
        return serve

    yield start
    for serve in started:
        serve.stack.stop()
