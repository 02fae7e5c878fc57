"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import own_redis_db


@pytest.fixture
def own_redis(redis_url: str) -> Iterator[str]:
    """A Redis database of its own: a scan sees every key this test wrote, and no other run's."""
    with own_redis_db(redis_url) as url:
        yield url
