"""GATEHOUSE_KAFKA_COMPRESSION: gzip unless set, one of librdkafka's codecs, anything else refused
when the settings are read (before a producer could start with it); the producer takes it."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from gatehouse.config import Compression, Settings
from gatehouse.outbox.kafka import KafkaPublisher


def read_settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_gzip_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEHOUSE_KAFKA_COMPRESSION", raising=False)
    assert read_settings().kafka_compression == "gzip"


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_each_codec_is_taken_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, codec: str
) -> None:
    monkeypatch.setenv("GATEHOUSE_KAFKA_COMPRESSION", codec)
    assert read_settings().kafka_compression == codec


@pytest.mark.parametrize("value", ["brotli", "GZIP", "", "lz4 ", "true"])
def test_an_unknown_codec_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GATEHOUSE_KAFKA_COMPRESSION", value)
    with pytest.raises(ValidationError) as refused:
        read_settings()
    assert [e["loc"] for e in refused.value.errors()] == [("kafka_compression",)]


def test_the_setting_lists_what_librdkafka_knows() -> None:
    assert set(get_args(Compression)) == {"none", "gzip", "snappy", "lz4", "zstd"}


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_the_producer_is_configured_with_the_codec(codec: Compression) -> None:
    publisher = KafkaPublisher("127.0.0.1:1", "gatehouse-test", compression=codec)
    assert publisher._config["compression.type"] == codec
