"""Shared fixtures: a real NATS JetStream and a real Postgres for the whole session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import test_servers, unique


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    with test_servers() as urls:
        yield urls


@pytest.fixture(scope="session")
def settings(servers: tuple[str, str]) -> KernelSettings:
    nats_url, db_url = servers
    return KernelSettings(nats_url=nats_url, database_url=db_url, publish_timeout_s=20)


@pytest.fixture(scope="session")
async def bus(settings: KernelSettings) -> AsyncIterator[Bus]:
    b = await Bus.connect(settings, source="test")
    await b.provision()
    yield b
    await b.close()


@pytest.fixture(scope="session")
async def pool(settings: KernelSettings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=8)
    assert p is not None
    yield p
    await p.close()


@pytest.fixture
def tenant() -> str:
    return unique("t")
