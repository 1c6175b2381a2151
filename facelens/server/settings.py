"""Service settings: what the ``facelens serve`` options set, validated so that insecure setups are refused."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import InvalidArgumentError
from ..store.home import validate_collection_name
from .errors import InsecureSettingsError

__all__ = ["SETTINGS_ENV", "PurposePolicy", "ServerSettings", "is_loopback"]

# How `facelens serve --processes N` hands its settings to the worker processes uvicorn starts.
SETTINGS_ENV = "FACELENS_SERVE_SETTINGS"

PurposePolicy = Literal["required", "optional"]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How the service runs.

    home: folder of the collections; the service keeps its API keys (``service/keys.sqlite``) and its
        search log (``service/search-log.sqlite``) under it.
    host, port: where ``facelens serve`` listens (the app itself does not bind).
    max_request_bytes: larger request bodies are refused with 413 while they are read.
    rate_limit: requests per second each API key may make, sustained; ``rate_burst`` more may come at
        once. 0 turns rate limiting off.
    request_timeout_s: limit on reading one request body and, separately, on its engine work; past it
        the client gets 408 (slow upload) or 503 ``timeout``.
    header_timeout_s: a connection whose request line and headers are not complete this long after it
        opened (or after the previous response) is closed: slow-header (slowloris) clients hold nothing.
    max_connections: connections and requests at once (uvicorn's ``limit_concurrency``); new requests
        beyond get 503.
    max_faces_per_image: faces examined per image (None: the engine's ``max_faces_per_image``, 100).
    workers: engine calls (detection, embedding, search) run at once; more requests wait their turn.
    engine_threads: onnxruntime threads per model call. With several workers, 1 avoids oversubscribing
        the cores: parallelism comes from concurrent requests.
    model: the engine's model (None: ``FACELENS_MODEL`` or buffalo_s).
    purpose_default: whether searches and compares must state a ``purpose`` (a case reference or
        reason, recorded in the search log); ``purpose_overrides`` sets it per collection.
    insecure_no_auth: serve without API keys, every caller acting as a global admin. Refused unless
        ``host`` is a loopback address.
    graceful_shutdown_s: on shutdown, how long requests in flight may take to finish.
    signing_key: the search log's Ed25519 signing key file (None: ``$FACELENS_LOG_SIGNING_KEY``, else
        ``<home>/service/log-signing.key``); keep it off the data folder so that whoever can write the
        log cannot also sign (docs/service.md, The search log).
    """

    home: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = 10 * 1024 * 1024
    rate_limit: float = 20.0
    rate_burst: int = 40
    request_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    max_connections: int = 512
    max_faces_per_image: int | None = None
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    engine_threads: int = 1
    model: str | None = None
    purpose_default: PurposePolicy = "required"
    purpose_overrides: Mapping[str, PurposePolicy] = field(default_factory=dict)
    insecure_no_auth: bool = False
    graceful_shutdown_s: float = 30.0
    signing_key: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser())
        if self.signing_key is not None:
            object.__setattr__(self, "signing_key", Path(self.signing_key).expanduser())
        object.__setattr__(self, "purpose_overrides", dict(self.purpose_overrides))
        positive = {"max_request_bytes": self.max_request_bytes, "request_timeout_s": self.request_timeout_s,
                    "workers": self.workers, "rate_burst": self.rate_burst, "header_timeout_s": self.header_timeout_s,
                    "max_connections": self.max_connections, "max_faces_per_image": self.max_faces_per_image or 1}
        for name, value in positive.items():
            if value <= 0:
                raise InvalidArgumentError(f"{name} must be > 0, got {value}")
        if self.rate_limit < 0 or self.engine_threads < 0 or self.graceful_shutdown_s < 0:
            raise InvalidArgumentError("rate_limit, engine_threads and graceful_shutdown_s must be >= 0")
        if not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"port must be 0-65535, got {self.port}")
        for name, policy in {"(default)": self.purpose_default, **self.purpose_overrides}.items():
            if policy not in ("required", "optional"):
                raise InvalidArgumentError(f"purpose policy of {name} must be 'required' or 'optional', got {policy!r}")
        for name in self.purpose_overrides:
            validate_collection_name(name)
        if self.insecure_no_auth and not is_loopback(self.host):
            raise InsecureSettingsError(
                f"--insecure-no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost), not "
                f"{self.host!r}: anyone who can reach the port could search and erase every collection")

    def to_json(self) -> str:
        """These settings as JSON (:meth:`from_json` reads them back)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps({**fields, "home": str(self.home), "purpose_overrides": dict(self.purpose_overrides),
                           "signing_key": None if self.signing_key is None else str(self.signing_key)})

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        """Settings written by :meth:`to_json`, validated again."""
        return cls(**json.loads(text))

    def purpose_policy(self, collection: str | None) -> PurposePolicy:
        """Whether a search of ``collection`` (None: a compare) must state a purpose."""
        if collection is None:
            return self.purpose_default
        return self.purpose_overrides.get(collection, self.purpose_default)
