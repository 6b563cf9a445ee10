from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.pop("LABKIT_PROFILE", None)

from labkit.backends.base import Backend
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


TEST_KEY_ENV = "LABKIT_TEST_KEY"
ClientFactory = Callable[..., Client]


@pytest.fixture
def client_factory(tmp_path: Path) -> Iterator[ClientFactory]:
    """The one way a test builds a client: `make(servers, backends=..., root=..., attempts=...)`
    gives a Client whose models are served by loopback fake servers ({model id: server}, key
    read from `key_env`) and/or scripted backends ({prefix: backend}), with fast retries and its
    own cache and trace store under `root` (default: the test's tmp_path). A test that needs
    its own aliases or policy passes `registry=` instead of `servers`. Closed at teardown."""
    made: list[Client] = []

    def make(
        servers: Mapping[str, FakeOpenAIServer] | None = None,
        *,
        backends: Mapping[str, Backend] | None = None,
        root: Path | None = None,
        attempts: int = 2,
        key_env: str = TEST_KEY_ENV,
        registry: Registry | None = None,
    ) -> Client:
        base = root or tmp_path
        registry = registry or Registry(
            models={
                m: {"api_base": s.url, "api_key_env": key_env} for m, s in (servers or {}).items()
            },
            policy={"retry": {"max_attempts": attempts, "base_delay": 0.001}},
        )
        client = Client(registry=registry, cache_dir=base / "cache", traces=base / "traces.db")
        for prefix, backend in (backends or {}).items():
            client.add_backend(prefix, backend)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
