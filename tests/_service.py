"""Running the facelens service for real in a test: uvicorn on 127.0.0.1, a free port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from facelens.server import ServerSettings, create_app
from facelens.server.keys import KeyStore


class LiveService:
    """``create_app(settings)`` served by uvicorn in a background thread until :meth:`stop`."""

    def __init__(self, settings: ServerSettings, **app_kwargs: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **app_kwargs)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test service did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Graceful shutdown, as on SIGTERM: stop accepting, finish requests in flight, run the lifespan end."""
        self.server.should_exit = True
        self.thread.join(timeout=60)


def make_key(home: Path, **kwargs: Any) -> str:
    store = KeyStore.open(home)
    try:
        return store.create(**kwargs).token
    finally:
        store.close()
