"""Backing services of the fault tests' own, so that stopping them hurts nobody else's tests: a
single-node KRaft Kafka broker from the jars `scripts/services` caches (same configuration as its
shared broker, on a free port pair and a temporary log dir) and a PostgreSQL cluster made with
initdb (run as `postgres` when we are root, as `scripts/services` does)."""

from __future__ import annotations

import base64
import getpass
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def _version_key(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path.name)]


def kafka_libs() -> Path:
    """The Kafka jars `scripts/services` resolved into its cache (it downloads them if needed)."""
    cache = Path(os.environ.get("GATEHOUSE_CACHE_DIR") or Path.home() / ".cache" / "gatehouse")

    def cached() -> Path | None:
        pinned = os.environ.get("GATEHOUSE_KAFKA_VERSION")
        dirs = [cache / "kafka" / pinned] if pinned else list((cache / "kafka").glob("*"))
        for d in sorted(dirs, key=_version_key, reverse=True):
            if (d / "libs" / ".complete").exists():
                return d / "libs"
        return None

    libs = cached()
    if libs is None:  # let the script resolve them, the one place that knows how
        subprocess.run(
            [
                str(REPO / "scripts" / "services"),
                "kafka-class",
                "kafka.tools.StorageTool",
                "random-uuid",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        libs = cached()
    assert libs is not None, "no Kafka jars in the cache after scripts/services resolved them"
    return libs


def _cluster_id() -> str:
    """What `StorageTool random-uuid` prints: 16 random bytes, base64url, no padding."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka avoids ids a command line would take for a flag
            return value


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class OwnKafka:
    """A broker of the test's own. `stop()` (SIGTERM, controlled shutdown) and `start()` again
    keep the same ports and log dir: clients reconnect to the same address, data survives."""

    root: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    libs: Path = field(default_factory=kafka_libs)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def _java(self, *args: str, heap: str = "-Xmx256m") -> list[str]:
        return [
            "java",
            heap,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.root}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def create(self) -> None:
        """Writes the configuration (that of scripts/services' kafka_write_config, on our ports
        and dir) and formats the log dir with a new cluster id."""
        data = self.root / "data"
        data.mkdir(parents=True)
        (self.root / "log4j2.properties").write_text(
            "status = warn\n"
            "name = gatehouse-chaos-kafka\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
        )
        (self.root / "server.properties").write_text(
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@{HOST}:{self.controller_port}\n"
            f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}\n"
            f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            f"log.dirs={data}\n"
            "num.partitions=1\n"
            "default.replication.factor=1\n"
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.min.isr=1\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            "group.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=false\n"
        )
        subprocess.run(
            self._java(
                "-XX:TieredStopAtLevel=1",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(self.root / "server.properties"),
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = 90) -> None:
        """Starts the broker and returns once it answers a metadata request."""
        assert self.process is None or self.process.poll() is not None, "already running"
        out = (self.root / "kafka.out").open("ab")
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.root / "server.properties"), heap="-Xmx512m"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run is ours to pass on, in stop()
        )
        out.close()
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"kafka exited during start-up:\n{self.tail()}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"kafka not ready in {timeout}s:\n{self.tail()}")
            time.sleep(0.3)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (Kafka's controlled shutdown) and wait; killed if it does not exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            _wait_exit(self.process, timeout)

    def tail(self) -> str:
        parts = []
        for name in ("server.log", "kafka.out"):
            path = self.root / name
            if path.exists():
                parts.append(
                    f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
                )
        return "\n".join(parts)


def _pg_bin() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: _version_key(p.parent.parent),
    )
    assert found, "PostgreSQL server binaries not found (scripts/services start installs them)"
    return found[-1].parent


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of the test's own, on a free port, in a temporary directory the
    `postgres` user can reach (pytest's tmp dirs are private to root)."""

    port: int = field(default_factory=free_port)
    bin: Path = field(default_factory=_pg_bin)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gatehouse-chaos-pg-")))
    user: str = "gatehouse"
    password: str = "gatehouse"
    database: str = "gatehouse"

    @property
    def _as_pg(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def _superuser(self) -> str:
        return "postgres" if os.geteuid() == 0 else getpass.getuser()

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def url(self) -> str:
        return (
            f"postgresql+asyncpg://{self.user}:{self.password}@{HOST}:{self.port}/{self.database}"
        )

    def _run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*self._as_pg, *args], capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.base.chmod(0o700)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self._superuser,
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
        )
        conf = (
            f"listen_addresses = '{HOST}'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.base}'\nmax_connections = 100\nfsync = off\n"
        )
        self._run("sh", "-c", f"cat >> '{self.data}/postgresql.conf' <<'EOF'\n{conf}EOF\n")
        self.start()
        self.sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.sql(f"CREATE DATABASE {self.database} OWNER {self.user}")

    def start(self) -> None:
        log = self.base / "postgres.log"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"
        )

    def running(self) -> bool:
        status = subprocess.run(
            [*self._as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=30,
        )
        return status.returncode == 0

    def sql(self, statement: str) -> str:
        """As the superuser over the cluster's own socket."""
        return self._run(
            str(self.bin / "psql"),
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.base),
            "-p",
            str(self.port),
            "-U",
            self._superuser,
            "-d",
            "postgres",
            "-c",
            statement,
        )

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
