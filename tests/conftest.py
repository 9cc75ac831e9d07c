"""Shared fixtures: a real NATS JetStream and a real Postgres for the whole session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import test_servers, unique

#: Fixtures that reach a real NATS or Postgres (the session's, or a package's own fleet or runtime):
#: a test that uses none of them (directly or through other fixtures) is in the ``unit`` layer
#: (``pytest -m unit``), every other one in ``connected``.
CONNECTED_FIXTURES = {"servers", "settings", "bus", "pool", "fleet", "runtime", "runtime_env", "rbus"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The checks (ruff, formatting, pyright, import-linter, contracts …) run before everything else.
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/contract/") else 1)
    for item in items:
        closure = set(getattr(item, "fixturenames", ()))
        marked = item.get_closest_marker("connected") or item.get_closest_marker("bench")  # bench: starts servers
        connected = bool(closure & CONNECTED_FIXTURES) or marked is not None
        item.add_marker(pytest.mark.connected if connected else pytest.mark.unit)


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
