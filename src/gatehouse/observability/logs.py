"""Logging setup for every process: plain lines for people, JSON lines for collectors."""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

# The id of the HTTP request being answered (set by the access log): JSON lines written while
# answering it carry it, so a warning can be joined to its request's access line.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Library loggers that, below their cap, write what must never reach a log: SQLAlchemy's engine
# logs each statement with its parameters at INFO (password hashes, token hashes, ciphertexts),
# the drivers and HTTP clients log queries, bodies and headers at DEBUG (DESIGN section 9).
STATEMENT_LOGGERS = ("sqlalchemy",)
LIBRARY_LOGGERS = (
    "aiosqlite",
    "asyncpg",
    "aiomysql",
    "pymysql",
    "redis",
    "bullmq",
    "aiokafka",
    "confluent_kafka",
    "kafka",
    "aiosmtplib",
    "httpx",
    "httpcore",
    "urllib3",
    "twilio",
    "sendgrid",
    "python_http_client",
    "socketio",
    "engineio",
    "websockets",
    "uvicorn",
    "multipart",
    "python_multipart",
    "starlette",
    "fastapi",
    "anyio",
    "h11",
    "h2",
    "hpack",
    "limits",
    "alembic",
    "asyncio",
)


class OwnDebugOnly(logging.Filter):
    """The handler's backstop: below INFO only Gatehouse's records, below WARNING no statement."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A library's logger may have been set lower than its cap after `configure` (SQLAlchemy's
        # `echo` sets its engine's), or not be named above: its records stop here all the same.
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        if name == "gatehouse" or name.startswith("gatehouse."):
            return True
        return record.levelno >= logging.INFO and not name.startswith(STATEMENT_LOGGERS)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        access = getattr(record, "access", None)
        if isinstance(access, dict):  # an access-log line: its fields at the top level
            entry.update(access)
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            entry["audit"] = audit
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # orjson: a line is written per request, and it is a few times cheaper than json.dumps;
        # `default=str` writes a value JSON has no type for (an audit detail) instead of failing.
        return orjson.dumps(entry, default=str).decode()


class PlainFormatter(logging.Formatter):
    """The default `asctime` line, its date and time formatted once a second rather than once a
    line: strftime cost a microsecond or two of every line, access lines included."""

    _second, _stamp = -1, ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:  # handlers format under their lock: no race on the pair
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def configure(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(OwnDebugOnly())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # No format here prints a thread, process or multiprocessing name: records skip looking them
    # up (the logging HOWTO's own advice), a quarter of making each one, access lines included.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.setLevel(level.upper())
    # librdkafka and uvicorn's own access log are chatty at INFO and say nothing a person needs;
    # `gatehouse.access` writes the access lines (one per request, with its route and id).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    cap_libraries(root.level)


def cap_libraries(level: int) -> None:
    """Keep library loggers at INFO or above (SQLAlchemy's at WARNING) whatever `level` is."""
    # Set on the library's top logger: its children (sqlalchemy.engine.Engine, httpx._client...)
    # inherit it, unless a library sets a child's own level (SQLAlchemy's `echo` does: off here).
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    for name in STATEMENT_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
