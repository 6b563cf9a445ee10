from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.pop("LABKIT_PROFILE", None)

from labkit.client import Client
from labkit.models import Registry
from labkit.testing import FakeBackend, FakeOpenAIServer


@pytest.fixture
def tmp_client(tmp_path: Path) -> Iterator[Client]:
    """A client with its own cache and trace store, and a scripted backend under `fake/`."""
    client = Client(
        registry=Registry(),
        cache_dir=tmp_path / "cache",
        traces=tmp_path / "traces.db",
    )
    client.add_backend("fake", FakeBackend(["first answer", "second answer", "third answer"]))
    yield client
    client.close()


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply="The answer is 42.", max_lifetime=120) as server:
        yield server


@pytest.fixture(scope="session")
def local_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One client on the real embedded model for the whole session (the model loads once)."""
    base = tmp_path_factory.mktemp("local")
    client = Client(registry=Registry(), cache_dir=base / "cache", traces=base / "traces.db")
    yield client
    client.close()
