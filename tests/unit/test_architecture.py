"""The dependency rule of docs/architecture.md, read from the source with `ast`, and "no work at
import time": importing every module builds no settings, engine or client and opens nothing."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import gatehouse

PACKAGE_DIR = Path(gatehouse.__file__).parent
# Run by their tools, not importable on their own: the CLI runner and Alembic's environment.
NOT_IMPORTABLE = {"gatehouse.__main__", "gatehouse.storage.migrations.env"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts
}


def _resolve_relative(module: str, level: int, target: str | None, is_package: bool) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, target] if target else base)


def gatehouse_imports(name: str) -> set[str]:
    """Every `gatehouse...` module `name` imports, anywhere in the file (functions and
    TYPE_CHECKING blocks included); `from pkg import mod` counts as importing `pkg.mod`."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(name, node.level, node.module, path.name == "__init__.py")
                if node.level
                else node.module or ""
            )
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {m for m in found if m == "gatehouse" or m.startswith("gatehouse.")}


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def of_layer(prefix: str) -> list[str]:
    return sorted(m for m in MODULES if within(m, prefix))


# What each module is, by where it lives (docs/architecture.md). These say what a module *is*;
# there is no list of modules excused from a rule.
DOORS = ("http", "job", "schemas", "fields")  # how a flow meets HTTP, the queues, the wire
# Use cases outside selfservice: the courier's decision and record, the operators' tasks.
OTHER_USE_CASES = (
    "gatehouse.courier.delivery",
    "gatehouse.courier.record",
    "gatehouse.admin.maintenance",
    "gatehouse.admin.users",
    "gatehouse.admin.audit",
    "gatehouse.admin.pages",
    "gatehouse.webhooks.registry",
    "gatehouse.webhooks.dispatch",
    "gatehouse.webhooks.delivery",
)
# Implementations of ports, named for their technology: only bootstrap chooses them.
IMPLEMENTATIONS = (
    "gatehouse.storage",
    "gatehouse.security",
    "gatehouse.outbox.kafka",
    "gatehouse.outbox.bus",
    "gatehouse.jobs.bullmq_queues",
    "gatehouse.jobs.bullmq_workers",
    "gatehouse.jobs.fast_worker",
    "gatehouse.jobs.embedded",
    "gatehouse.jobs.redis_pipeline",
    "gatehouse.jobs.job_data",
    "gatehouse.realtime.notifier",
    "gatehouse.courier.channels",
    "gatehouse.courier.templates",
    "gatehouse.observability.prometheus",
    "gatehouse.observability.otel",
    "gatehouse.observability.tracing",
    "gatehouse.observability.traced",
    "gatehouse.webhooks.httpx_client",
)


def is_use_case(module: str) -> bool:
    if within(module, *OTHER_USE_CASES):
        return True
    if not within(module, "gatehouse.selfservice") or module == "gatehouse.selfservice":
        return False
    return module.rsplit(".", 1)[1] not in DOORS and MODULES[module].name != "__init__.py"


USE_CASES = sorted(m for m in MODULES if is_use_case(m))


def test_the_package_is_where_we_think() -> None:
    for expected in (
        "gatehouse.domain.crypto",
        "gatehouse.selfservice.registration.flow",
        "gatehouse.selfservice.registration.http",
        "gatehouse.selfservice.registration.job",
        "gatehouse.selfservice.registration.schemas",
        "gatehouse.entrypoints.app",
        "gatehouse.bootstrap",
    ):
        assert expected in MODULES
    # Every flow package holds its use case; each classification names modules that exist.
    for flow in ("registration", "login", "sessions", "profile", "recovery", "verification"):
        assert f"gatehouse.selfservice.{flow}.flow" in USE_CASES
    for prefix in (*OTHER_USE_CASES, *IMPLEMENTATIONS):
        assert any(within(m, prefix) for m in MODULES), prefix
    assert "gatehouse.selfservice.registration.http" not in USE_CASES
    # The resolver sees what a module really imports.
    assert "gatehouse.domain.crypto" in gatehouse_imports("gatehouse.domain.tokens")
    assert "gatehouse.storage.sql" in gatehouse_imports("gatehouse.bootstrap")


def test_no_test_double_ships_in_the_package() -> None:
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        assert "import tests" not in source and "from tests" not in source, name


@pytest.mark.parametrize("module", of_layer("gatehouse.domain"))
def test_domain_imports_nothing_of_ours(module: str) -> None:
    # The exception tree imports nothing itself, so raising from it keeps the domain pure.
    outside = {
        m
        for m in gatehouse_imports(module)
        if not within(m, "gatehouse.domain", "gatehouse.errors")
    }
    assert outside == set(), f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", USE_CASES)
def test_use_cases_import_only_domain_ports_errors_and_use_cases(module: str) -> None:
    allowed = ("gatehouse.domain", "gatehouse.ports", "gatehouse.errors")
    outside = {
        m for m in gatehouse_imports(module) if not within(m, *allowed) and not is_use_case(m)
    }
    assert outside == set(), f"{module} imports {sorted(outside)}"


def test_the_exception_tree_and_configuration_import_nothing_of_ours() -> None:
    assert gatehouse_imports("gatehouse.errors") == set()
    assert {m for m in gatehouse_imports("gatehouse.config") if m != "gatehouse.errors"} == set()
    assert all(
        within(m, "gatehouse.domain", "gatehouse.errors", "gatehouse.ports")
        for port in of_layer("gatehouse.ports")
        for m in gatehouse_imports(port)
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_bootstrap_chooses_implementations(module: str) -> None:
    if module == "gatehouse.bootstrap" or within(module, *IMPLEMENTATIONS):
        return  # the composition root, and implementations building on each other
    chosen = {m for m in gatehouse_imports(module) if within(m, *IMPLEMENTATIONS)}
    assert chosen == set(), f"{module} imports {sorted(chosen)}"


@pytest.mark.parametrize("module", [m for m in sorted(MODULES) if within(m, *IMPLEMENTATIONS)])
def test_implementations_never_import_doors_use_cases_or_assembly(module: str) -> None:
    bad = {
        m
        for m in gatehouse_imports(module)
        if within(m, "gatehouse.entrypoints", "gatehouse.bootstrap", "gatehouse.web")
        or is_use_case(m)
        or (within(m, "gatehouse.selfservice") and m.rsplit(".", 1)[1] in ("http", "job"))
    }
    assert bad == set(), f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_entrypoints_except_entrypoints(module: str) -> None:
    if within(module, "gatehouse.entrypoints") or module == "gatehouse.__main__":
        return
    bad = {m for m in gatehouse_imports(module) if within(m, "gatehouse.entrypoints")}
    assert bad == set(), f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small_and_say_what_they_hold(module: str) -> None:
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400, f"{module}: {len(source.splitlines())} lines"
    docstring = ast.get_docstring(ast.parse(source))
    if path.name != "__init__.py" or source.strip():
        assert docstring, f"{module} has no docstring"


IMPORT_PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys

    names, ours = json.loads(sys.argv[1]), sys.argv[2]
    events = []
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    WATCHED = ("socket.__new__", "socket.connect", "socket.bind", "sqlite3.connect",
               "subprocess.Popen", "os.fork", "os.mkdir")

    def importing_module():
        # The module body being executed: what a library does while *it* is imported (urllib3
        # probes IPv6 with a socket) is its business; what runs in one of ours is ours.
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                return frame.f_code.co_filename
            frame = frame.f_back
        return ""

    def hook(event, args):
        if event == "open":
            _path, mode, flags = args
            watched = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & WRITE_FLAGS))
        else:
            watched = event in WATCHED
        if watched:
            where = importing_module()
            if where.startswith(ours):
                events.append([event, repr(args)[:200], where])

    sys.addaudithook(hook)
    for name in names:
        importlib.import_module(name)

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from redis.asyncio import Redis
    from concurrent.futures import Executor
    from gatehouse.config import Settings
    from gatehouse.bootstrap import Services
    from fastapi import FastAPI
    kinds = (Settings, Engine, AsyncEngine, Redis, Executor, Services, FastAPI)
    try:
        import confluent_kafka
        kinds += (confluent_kafka.Producer, confluent_kafka.Consumer)
    except ImportError:
        pass
    built = []
    for name in names:
        module = sys.modules[name]
        for attr, value in vars(module).items():
            if isinstance(value, kinds):
                built.append(f"{name}.{attr}: {type(value).__name__}")
    print(json.dumps({"events": events, "built": built}))
    """
)


@dataclass
class ImportProbe:
    """The probe running in a fresh interpreter, in an empty directory of its own."""

    process: subprocess.Popen[str]
    workdir: Path

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        shutil.rmtree(self.workdir, ignore_errors=True)


PROBE = pytest.StashKey[ImportProbe]()
PROBE_TEST = "test_importing_every_module_does_no_work"


def start_import_probe() -> ImportProbe:
    """Importing everything takes seconds: conftest starts this once collection shows the test
    is selected, so it runs beside the other tests."""
    names = sorted(set(MODULES) - NOT_IMPORTABLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-import-probe-"))
    process = subprocess.Popen(
        [sys.executable, "-c", IMPORT_PROBE, json.dumps(names), str(PACKAGE_DIR)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,  # a stray .env, database or secrets file would land here
        env=env,
    )
    return ImportProbe(process, workdir)


def test_importing_every_module_does_no_work(request: pytest.FixtureRequest) -> None:
    probe = request.config.stash.get(PROBE, None)
    if probe is None:
        probe = start_import_probe()
        request.addfinalizer(probe.close)
    stdout, stderr = probe.process.communicate(timeout=120)
    assert probe.process.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["built"] == []
    assert report["events"] == []
    assert list(probe.workdir.iterdir()) == []


def test_config_has_no_module_level_settings() -> None:
    from gatehouse import config

    assert not any(isinstance(v, config.Settings) for v in vars(config).values())
    tree = ast.parse(MODULES["gatehouse.config"].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            func = node.value.func
            assert not (isinstance(func, ast.Name) and func.id == "Settings")
