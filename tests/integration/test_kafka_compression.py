"""GATEHOUSE_KAFKA_COMPRESSION on a real broker: the relay publishes outbox rows with the chosen
codec, the broker stores each record batch with it (read from the batch headers in the broker's
own log segments), a consumer reads the records back, and kafkajs, the seeds' Node client, reads
gzip and uncompressed records with nothing added, but not lz4 (the codec Gatehouse used to
hard-wire)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from gatehouse.config import Compression
from gatehouse.outbox.kafka import KafkaPublisher, ensure_topics
from gatehouse.outbox.relay import Relay
from gatehouse.storage.sql_outbox import SqlOutboxStore
from tests.conftest import read_topic, unique
from tests.integration.conftest import outbox_of_logins

INTEROP = Path(__file__).resolve().parents[1] / "interop"
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}  # a batch's attributes & 7
COUNT = 12


def utcnow() -> datetime:
    return datetime.now(UTC)


async def relay_events(bootstrap: str, tmp: Path, codec: Compression) -> tuple[str, list[Any]]:
    """COUNT user events written to an outbox and published by the relay; the topic and the
    events written."""
    topic = unique(f"gh-codec-{codec}")
    ensure_topics(bootstrap, [topic], 1, 1)
    engine, written = await outbox_of_logins(tmp / f"{codec}.db", topic, COUNT)
    publisher = KafkaPublisher(bootstrap, "gatehouse-test", compression=codec)
    relay = Relay(
        SqlOutboxStore(engine, utcnow), publisher, batch=COUNT, interval=0.01, clock=utcnow
    )
    await publisher.start()
    while await relay.run_once():
        pass
    await publisher.close()
    await engine.dispose()
    assert relay.published == COUNT
    return topic, written


def batch_codecs(bootstrap: str, topic: str) -> list[str]:
    """The codec of each record batch of partition 0, from the batch headers in the broker's log
    segment (the test broker runs on this machine: `log.dirs` is a local folder)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    broker = next(iter(admin.list_topics(timeout=10).brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
    config = admin.describe_configs([resource])[resource].result(10)
    folders = [Path(d) / f"{topic}-0" for d in config["log.dirs"].value.split(",")]
    [folder] = [f for f in folders if f.is_dir()]
    data = b"".join(p.read_bytes() for p in sorted(folder.glob("*.log")))
    codecs, position = [], 0
    # A v2 batch: baseOffset int64, batchLength int32 (what follows it), leader epoch int32,
    # magic int8, crc uint32, attributes int16 (the codec in its low three bits), ...
    while position + 23 <= len(data):
        (length,) = struct.unpack_from(">i", data, position + 8)
        magic, attributes = data[position + 16], struct.unpack_from(">h", data, position + 21)[0]
        assert magic == 2, f"record batch v{magic}"
        codecs.append(CODECS[attributes & 0x07])
        position += 12 + length
    return codecs


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_the_relay_publishes_with_the_chosen_codec(
    kafka_bootstrap: str, tmp_path: Path, codec: Compression
) -> None:
    topic, written = await relay_events(kafka_bootstrap, tmp_path, codec)
    received = await asyncio.to_thread(read_topic, kafka_bootstrap, topic, COUNT)
    by_id = {m.id: m for m in written}
    assert sorted(dict(m.headers())["id"].decode() for m in received) == sorted(by_id)
    for msg in received:
        original = by_id[dict(msg.headers())["id"].decode()]
        assert json.loads(msg.value()) == original.payload
        assert msg.key().decode() == original.key
    codecs = batch_codecs(kafka_bootstrap, topic)
    assert codecs and set(codecs) == {codec}, codecs


def kafkajs_reads(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """What tests/interop/kafka_read.mjs (kafkajs, no codec plug-in) printed for `topic`."""
    if not (INTEROP / "node_modules" / "kafkajs" / "package.json").exists():
        subprocess.run([str(INTEROP / "install")], check=True, timeout=600)
    run = subprocess.run(
        ["node", str(INTEROP / "kafka_read.mjs")],
        env={**os.environ, "KAFKA_BROKERS": bootstrap, "TOPIC": topic, "COUNT": str(COUNT)},
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.parametrize("codec", ["gzip", "none"])
async def test_kafkajs_reads_gzip_and_uncompressed_events(
    kafka_bootstrap: str, tmp_path: Path, codec: Compression
) -> None:
    topic, written = await relay_events(kafka_bootstrap, tmp_path, codec)
    lines = await asyncio.to_thread(kafkajs_reads, kafka_bootstrap, topic)
    assert lines[-1] == {"done": True}, lines
    by_id = {m.id: m for m in written}
    assert sorted(line["headers"]["id"] for line in lines[:-1]) == sorted(by_id)
    for line in lines[:-1]:
        original = by_id[line["headers"]["id"]]
        assert line["value"] == original.payload and line["key"] == original.key
        assert line["headers"]["content-type"] == "application/cloudevents+json"


async def test_kafkajs_cannot_read_lz4_without_a_plugin(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Why lz4 is not the default any more."""
    topic, _ = await relay_events(kafka_bootstrap, tmp_path, "lz4")
    lines = await asyncio.to_thread(kafkajs_reads, kafka_bootstrap, topic)
    assert lines == [{"error": "KafkaJSNotImplemented: LZ4 compression not implemented"}]
