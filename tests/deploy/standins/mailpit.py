#!/usr/bin/python3
"""Stands in for the mail catcher `axllent/mailpit` in the deploy tests, where its image cannot
be pulled: it keeps every message received by SMTP in memory and answers the parts of mailpit's
HTTP API (v1) that the tests and a person need, with mailpit's field names:

- `GET /api/v1/messages` (newest first; `start`, `limit`) and `GET /api/v1/search?query=`
  (`to:`, `from:`, `subject:` and plain words): `{total, unread, count, messages_count, start,
  tags, messages: [{ID, MessageID, Read, From, To, Cc, Bcc, ReplyTo, Subject, Created, Tags,
  Size, Attachments, Snippet}]}`;
- `GET /api/v1/message/{ID}` (or `latest`): the summary's fields plus `Date`, `Text`, `HTML`;
  `GET /api/v1/message/{ID}/raw`: the message as received;
- `DELETE /api/v1/messages`: every message, or the `IDs` of a JSON body;
- `GET /livez`, `GET /readyz`; `GET /` lists the messages, `GET /view/{ID}` shows one;
- `/mailpit readyz` on the command line: exit 0 when the server answers (the image's health check).

SMTP on `MP_SMTP_BIND_ADDR` (`0.0.0.0:1025`), HTTP on `MP_UI_BIND_ADDR` (`0.0.0.0:8025`), as
mailpit's defaults. Python's standard library and Debian's aiosmtpd only.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import secrets
import signal
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SMTP_BIND = os.environ.get("MP_SMTP_BIND_ADDR", "0.0.0.0:1025")
UI_BIND = os.environ.get("MP_UI_BIND_ADDR", "0.0.0.0:8025")

LOCK = threading.Lock()
MESSAGES: list[dict[str, Any]] = []  # oldest first


def _address(item: Any) -> dict[str, str]:
    return {"Name": item.display_name or "", "Address": item.addr_spec}


def _addresses(message: EmailMessage, header: str) -> list[dict[str, str]]:
    value = message[header]
    return [_address(a) for a in value.addresses] if value is not None else []


def _part(message: EmailMessage, kind: str) -> str:
    body = message.get_body((kind,))
    return str(body.get_content()) if body is not None else ""


def keep(raw: bytes) -> dict[str, Any]:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text = _part(message, "plain")
    senders = _addresses(message, "From")
    entry = {
        "ID": secrets.token_urlsafe(16)[:22],
        "MessageID": str(message["Message-ID"] or "").strip("<>"),
        "Read": False,
        "From": senders[0] if senders else {"Name": "", "Address": ""},
        "To": _addresses(message, "To"),
        "Cc": _addresses(message, "Cc"),
        "Bcc": [],
        "ReplyTo": _addresses(message, "Reply-To"),
        "Subject": str(message["Subject"] or ""),
        "Created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "Tags": [],
        "Size": len(raw),
        "Attachments": 0,
        "Snippet": " ".join(text.split())[:250],
        # Only in the message itself:
        "Date": str(message["Date"] or ""),
        "Text": text,
        "HTML": _part(message, "html"),
        "_raw": raw,
    }
    with LOCK:
        MESSAGES.append(entry)
    print(f"[mailpit] message {entry['ID']} to {[t['Address'] for t in entry['To']]}", flush=True)
    return entry


SUMMARY = [
    "ID",
    "MessageID",
    "Read",
    "From",
    "To",
    "Cc",
    "Bcc",
    "ReplyTo",
    "Subject",
    "Created",
    "Tags",
    "Size",
    "Attachments",
    "Snippet",
]


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in SUMMARY}


def matches(entry: dict[str, Any], query: str) -> bool:
    for term in query.lower().split():
        field, _, value = term.partition(":")
        if not _:
            field, value = "", term
        people = {
            "to": [t["Address"].lower() for t in entry["To"] + entry["Cc"]],
            "from": [entry["From"]["Address"].lower()],
        }
        if field in people:
            if not any(value in p for p in people[field]):
                return False
        elif field == "subject":
            if value not in entry["Subject"].lower():
                return False
        elif value not in (entry["Subject"] + " " + entry["Text"]).lower():
            return False
    return True


def listing(entries: list[dict[str, Any]], params: dict[str, list[str]]) -> dict[str, Any]:
    newest = list(reversed(entries))
    start = int(params.get("start", ["0"])[0])
    limit = int(params.get("limit", ["50"])[0])
    page = newest[start : start + limit]
    return {
        "total": len(entries),
        "unread": sum(1 for e in entries if not e["Read"]),
        "count": len(page),
        "messages_count": len(entries),
        "start": start,
        "tags": [],
        "messages": [summary(e) for e in page],
    }


class Api(BaseHTTPRequestHandler):
    server_version = "mailpit-standin"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _find(self, ident: str) -> dict[str, Any] | None:
        with LOCK:
            if ident == "latest":
                return MESSAGES[-1] if MESSAGES else None
            return next((e for e in MESSAGES if e["ID"] == ident), None)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        with LOCK:
            entries = list(MESSAGES)
        if url.path in ("/livez", "/readyz"):
            self._send(200, b"ok", "text/plain")
        elif url.path == "/api/v1/messages":
            self._json(listing(entries, params))
        elif url.path == "/api/v1/search":
            query = params.get("query", [""])[0]
            self._json(listing([e for e in entries if matches(e, query)], params))
        elif parts[:3] == ["api", "v1", "message"] and len(parts) in (4, 5):
            entry = self._find(parts[3])
            if entry is None:
                self._send(404, b"message not found", "text/plain")
            elif len(parts) == 5 and parts[4] == "raw":
                self._send(200, entry["_raw"], "text/plain; charset=utf-8")
            elif len(parts) == 4:
                entry["Read"] = True
                self._json({k: v for k, v in entry.items() if not k.startswith("_")})
            else:
                self._send(404, b"not found", "text/plain")
        elif parts[:1] == ["view"] and len(parts) == 2:
            entry = self._find(parts[1])
            if entry is None:
                self._send(404, b"message not found", "text/plain")
            else:
                self._page(
                    f"<h1>{html.escape(entry['Subject'])}</h1><p>To "
                    f"{html.escape(', '.join(t['Address'] for t in entry['To']))}</p>"
                    f"<pre>{html.escape(entry['Text'])}</pre><p><a href='/'>All messages</a></p>"
                )
        elif url.path == "/":
            rows = "".join(
                f"<li><a href='/view/{e['ID']}'>{html.escape(e['Subject'])}</a> to "
                f"{html.escape(', '.join(t['Address'] for t in e['To']))} "
                f"<small>{e['Created']}</small></li>"
                for e in reversed(entries)
            )
            self._page(f"<h1>Mail ({len(entries)})</h1><ul>{rows}</ul>")
        else:
            self._send(404, b"not found", "text/plain")

    def _page(self, body: str) -> None:
        page = f"<!doctype html><meta charset=utf-8><title>Mail catcher</title>{body}"
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path != "/api/v1/messages":
            self._send(404, b"not found", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        ids = set(json.loads(self.rfile.read(length) or b"{}").get("IDs") or [])
        with LOCK:
            MESSAGES[:] = [e for e in MESSAGES if ids and e["ID"] not in ids]
        self._send(200, b"ok", "text/plain")


class Sink:
    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        keep(envelope.original_content or envelope.content)
        return "250 2.0.0 Ok: queued"


def split(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host or "0.0.0.0", int(port)


async def serve() -> None:
    from aiosmtpd.smtp import SMTP

    http = ThreadingHTTPServer(split(UI_BIND), Api)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    host, port = split(SMTP_BIND)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Sink(), hostname="mailpit", decode_data=False), host, port
    )
    print(f"[mailpit] SMTP on {SMTP_BIND}, web and API on {UI_BIND}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # as PID 1, nothing else would stop it
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    http.shutdown()


def main() -> int:
    if sys.argv[1:2] == ["readyz"]:
        port = split(UI_BIND)[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as answer:
                return 0 if answer.status == 200 else 1
        except OSError:
            return 1
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
