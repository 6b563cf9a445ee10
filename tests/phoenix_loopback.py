"""Run `phoenix serve` with its gRPC collector on 127.0.0.1 instead of every interface.

Phoenix binds its HTTP server to PHOENIX_HOST but its gRPC OTLP port to "[::]" whatever the
settings; the tests only use OTLP/HTTP, and a test server must not listen beyond loopback.
Run with Phoenix's own interpreter (its venv), not labkit's.
"""

import sys

import grpc.aio._server as _server

_add_insecure_port = _server.Server.add_insecure_port


def _loopback(self, address):  # type: ignore[no-untyped-def]
    return _add_insecure_port(self, address.replace("[::]", "127.0.0.1"))


_server.Server.add_insecure_port = _loopback  # type: ignore[method-assign]

from phoenix.server.main import main  # noqa: E402

sys.argv = ["phoenix", "serve"]
sys.exit(main())
