"""Fixtures shared by the integration and end-to-end tests: the real services (and a database of
a test's own on PostgreSQL), a mail sink and other SMTP servers, readers of Kafka topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

REQUIRED = os.environ.get("GATEHOUSE_TEST_REQUIRE_SERVICES") == "1"


def service_env(name: str) -> str:
    """A service address from `scripts/services start`; missing fails under REQUIRE_SERVICES."""
    value = os.environ.get(f"GATEHOUSE_TEST_{name}", "")
    if value:
        return value
    message = f'GATEHOUSE_TEST_{name} is not set: run `eval "$(scripts/services start)"`'
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message + " (with GATEHOUSE_TEST_REQUIRE_SERVICES=1 this fails instead)")
    raise AssertionError("unreachable")


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """A test that runs a command runs `logs.configure`: a handler on the root logger writing to
    the stream the test captured (closed when it ends: every later line an "I/O operation on
    closed file" error) and the levels of a process. After each test, that handler goes and the
    levels are put back (pytest's own capture handlers, of other types, are its to remove)."""
    root = logging.getLogger()
    handlers = set(root.handlers)
    loggers = logging.root.manager.loggerDict
    levels = {
        name: logger.level for name, logger in loggers.items() if isinstance(logger, logging.Logger)
    }
    root_level, flags = root.level, (logging.logThreads, logging.logProcesses)
    yield
    for handler in root.handlers[:]:
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(root_level)
    for name, logger in list(loggers.items()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))
    logging.logThreads, logging.logProcesses = flags


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return service_env("POSTGRES_URL")


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    return service_env("MARIADB_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return service_env("REDIS_URL")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return service_env("KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture
def postgres_database(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """A new database on the shared PostgreSQL, migrated, for this test alone; dropped after."""
    from tests.integration.conftest import create_database, drop_database

    url, admin = create_database("postgres", tmp_path)
    try:
        yield url
    finally:
        drop_database(url, admin)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class MailSink:
    """An aiosmtpd server on loopback that keeps every message it receives."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.received:
            self.messages.append(message_from_bytes(envelope.content))
            self.envelopes.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos)})
            self.received.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [m for m in list(self.messages) if m["To"] == address]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 30.0) -> list[Message]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.to(address)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{count} mail(s) to {address} not received in {timeout}s")
            await asyncio.sleep(0.05)
        return self.to(address)


class SmtpHandler(Protocol):
    """What `smtp_server` serves: aiosmtpd's `handle_*` methods, and where to listen."""

    host: str
    port: int


Handler = TypeVar("Handler", bound=SmtpHandler)


@contextlib.contextmanager
def smtp_server(handler: Handler) -> Iterator[Handler]:
    """An aiosmtpd server on `handler`'s host and port, answering with its methods, until the
    block ends (stopping joins the server's thread: nothing is handled after it)."""
    from aiosmtpd.controller import Controller

    controller = Controller(handler, hostname=handler.host, port=handler.port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def mail_sink() -> Iterator[MailSink]:
    with smtp_server(MailSink("127.0.0.1", free_port())) as sink:
        yield sink


def body_of(message: Message) -> str:
    part = message.get_payload(decode=True)
    if isinstance(part, bytes):
        return part.decode()
    return str(message.get_payload())


def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Each partition of `topic` and its end (the offset the next record will take)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": unique("marks")})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def read_topic(bootstrap_servers: str, topic: str, count: int, timeout: float = 30) -> list[Any]:
    """Up to `count` records of `topic` from its start, by a consumer group of its own that
    commits nothing; fewer if `timeout` seconds pass first."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += [m for m in consumer.consume(count - len(found), 0.5) if m.error() is None]
    consumer.close()
    return found


def committed_offset(bootstrap_servers: str, group: str, topic: str) -> int:
    """The offset `group` has committed on partition 0 of `topic`."""
    from confluent_kafka import Consumer, TopicPartition

    checker = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    try:
        return int(checker.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    finally:
        checker.close()


def courier_group_at_end(bootstrap_servers: str, group: str, topic: str = "send-otp") -> None:
    """Commit `group`'s offsets at the end of `topic`, so a test's courier skips every earlier
    run's commands on the shared broker (a fresh broker has no topic yet: nothing to skip)."""
    from confluent_kafka import Consumer, TopicPartition

    marks = [
        TopicPartition(topic, p, end) for p, end in end_offsets(bootstrap_servers, topic).items()
    ]
    if not marks:
        return
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    try:
        consumer.commit(offsets=marks, asynchronous=False)
    finally:
        consumer.close()


@contextlib.contextmanager
def quiet_mail_log() -> Iterator[None]:
    """aiosmtpd logs every connection at INFO from its own thread, and a kept connection closes
    at the end of a test: not a record to send to whatever handler an earlier test left."""
    log = logging.getLogger("mail.log")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)
