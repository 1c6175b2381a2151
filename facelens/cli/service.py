"""The service's commands: ``facelens serve``, ``facelens keys create|list|revoke``, ``facelens log
verify|checkpoint|public-key|export``.

Registered on the main ``facelens`` group by facelens/cli/__init__.py. Imports stay light: facelens.server
(FastAPI, uvicorn, the key and log stores) loads only inside the commands. Errors go through the one exit-code
table, facelens/cli/_common.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import FacelensError
from ._common import _fail

__all__ = ["keys", "log", "serve"]

_SCOPES = ["admin", "index", "search", "read", "review"]


def _home_option(f: Any) -> Any:
    return click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder holding the collections, keys and search log (default: $FACELENS_HOME, "
                             "else the user data folder).")(f)


def _home(home: Path | None) -> Path:
    from ..store import default_home

    return home if home is not None else default_home()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs API keys (`facelens keys create`).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@_home_option
@click.option("--model", default=None, help="buffalo_s (default), sface, dlib, or a model folder.")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Service processes sharing the port, each with its own engine: for machines with more "
                   "cores than one Python process keeps busy (the GIL). Rate limits then apply per process.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Engine calls (detect, embed, search) run at once in each process; default one per core, "
                   "divided between the processes.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="onnxruntime threads per engine call (0: one per core).")
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Refuse request bodies larger than this (413), while reading them.")
@click.option("--rate-limit", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Requests per second per key, sustained (0: unlimited).")
@click.option("--rate-burst", type=click.IntRange(min=1), default=40, show_default=True,
              help="Requests a key may make at once before --rate-limit applies.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds allowed for reading a request body, and for its engine work.")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Close connections whose request line and headers take longer than this (slowloris).")
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True,
              help="Connections and requests at once per process; new requests beyond get 503.")
@click.option("--max-faces-per-image", type=click.IntRange(min=1), default=None,
              help="Faces examined per image, the largest (default: $FACELENS_MAX_FACES_PER_IMAGE, else 100).")
@click.option("--purpose-default", type=click.Choice(["required", "optional"]), default="required",
              show_default=True, help="Whether searches and compares must give a purpose (case reference).")
@click.option("--purpose-optional", multiple=True, metavar="COLLECTION",
              help="Make the purpose optional for this collection (repeatable).")
@click.option("--purpose-required", multiple=True, metavar="COLLECTION",
              help="Make the purpose required for this collection (repeatable).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Serve without API keys, every caller an admin. Loopback addresses only; for local tests.")
@click.option("--graceful-shutdown", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds requests in flight may take to finish after SIGTERM/Ctrl-C.")
@click.option("--signing-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The search log's Ed25519 signing key file (default: $FACELENS_LOG_SIGNING_KEY, else "
                   "HOME/service/log-signing.key); made on first use. Keep it off the data folder.")
@click.option("--access-log/--no-access-log", default=True, help="Log each request (method, path, status).")
@click.option("--database", default=None, metavar="URL",
              help="Keep the API keys and the search log in this PostgreSQL database (postgresql://user@host:port/db) "
                   "shared by every server of a deployment (default: $FACELENS_DATABASE, else `database` in "
                   "HOME/facelens.toml, else the files under HOME/service/). See docs/scale-out.md.")
@click.option("--http", "protocol", type=click.Choice(["auto", "httptools", "h11"]), default="auto",
              show_default=True, help="HTTP/1.1 parser: httptools (C, installed with facelens) or h11 (pure "
              "Python); auto: httptools when installed. Both close connections slow with their headers.")
@click.option("--loop", type=click.Choice(["auto", "uvloop", "asyncio"]), default="auto", show_default=True,
              help="Event loop: uvloop (installed with facelens on Linux and macOS) or asyncio's own; "
              "auto: uvloop when installed.")
def serve(host: str, port: int, home: Path | None, model: str | None, processes: int, workers: int | None, threads: int,
          max_request_mb: float, rate_limit: float, rate_burst: int, request_timeout: float, header_timeout: float,
          max_connections: int, max_faces_per_image: int | None, purpose_default: str,
          purpose_optional: tuple[str, ...], purpose_required: tuple[str, ...], insecure_no_auth: bool,
          graceful_shutdown: float, signing_key: Path | None, access_log: bool, database: str | None,
          protocol: str, loop: str) -> None:
    """Run the HTTP service (OpenAPI documentation at /docs). Stop it with Ctrl-C or SIGTERM: requests
    in flight finish, then the collections are saved and closed."""
    import os

    from ..server.settings import SETTINGS_ENV, ServerSettings

    overrides: dict[str, Any] = {c: "optional" for c in purpose_optional}
    overrides.update({c: "required" for c in purpose_required})
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // processes)
    try:
        if database is not None:  # the key store and the log read it, in this process and the ones it starts
            from ..config import DATABASE_ENV, database_url

            os.environ[DATABASE_ENV] = database_url(_home(home), database) or "sqlite"
        settings = ServerSettings(
            home=_home(home), host=host, port=port, model=model, engine_threads=threads, workers=workers,
            max_request_bytes=int(max_request_mb * 1024 * 1024), rate_limit=rate_limit, rate_burst=rate_burst,
            request_timeout_s=request_timeout, header_timeout_s=header_timeout, max_connections=max_connections,
            max_faces_per_image=max_faces_per_image, purpose_default=purpose_default,  # type: ignore[arg-type]
            purpose_overrides=overrides, insecure_no_auth=insecure_no_auth, graceful_shutdown_s=graceful_shutdown,
            signing_key=signing_key)
        from ..server.app import check_can_serve, create_app
        from ..server.limits import check_loop, http_protocol

        http_protocol(protocol)  # before the engine loads: a missing package is a usage error
        check_loop(loop)

        if processes == 1:
            app: Any = create_app(settings)
        else:  # each process uvicorn starts builds its own app from the settings in its environment
            check_can_serve(settings)
            os.environ[SETTINGS_ENV] = settings.to_json()
            app = "facelens.server.app:app_from_environment"
    except FacelensError as exc:
        _fail(exc)
    import uvicorn

    from ..server.limits import uvicorn_config

    if insecure_no_auth:
        click.echo("facelens: warning: --insecure-no-auth: every local caller is an admin; requests must come "
                   "from loopback names, not from web pages (docs/service.md, Limits)", err=True)
    config = uvicorn_config(app, settings, http=protocol, loop=loop, host=host, port=port, access_log=access_log,
                            timeout_graceful_shutdown=math.ceil(graceful_shutdown) or None,
                            log_level="info", factory=processes > 1, workers=processes)
    if processes == 1:
        uvicorn.Server(config).run()
    else:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[_listen(host, port)]).run()  # as uvicorn.run does for workers > 1


def _listen(host: str, port: int) -> Any:
    """The listening socket the processes share. Not uvicorn's Config.bind_socket: that leaves the
    protocol at 0, so asyncio does not set TCP_NODELAY on accepted connections and every keep-alive
    response waits ~40 ms for a delayed ACK (uvicorn issue #3149; measured here: GET /health 44 ms)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        click.echo(f"facelens: error: cannot listen on {host}:{port}: {exc}", err=True)
        sys.exit(3)
    sock.set_inheritable(True)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    click.echo(f"facelens: serving on http://{shown}:{port}", err=True)
    return sock


# -- keys ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _action_log(home: Path | None) -> Iterator[Any]:
    """The search log of the home, open for recording key creation and revocation (the actor: the local
    user running the command; key_id null: done on the host, not with an API key)."""
    from ..accountability.log import SearchLog

    action_log = SearchLog.open(_home(home))
    try:
        yield action_log
    finally:
        action_log.close()


@click.group()
def keys() -> None:
    """Create, list and revoke the API keys of the service."""


@keys.command("create")
@click.option("--collection", "collections", multiple=True, metavar="NAME",
              help="Collection the key may use (repeatable); each gets every --scope.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(_SCOPES),
              help="admin, index, search or read (repeatable).")
@click.option("--admin", is_flag=True, help="Global admin: every scope on every collection, and the search log.")
@click.option("--name", default=None, help="What the key is for (shown by `keys list`).")
@click.option("--json", "as_json", is_flag=True, help="Print the key (with its token) as JSON.")
@_home_option
def keys_create(collections: tuple[str, ...], scopes: tuple[str, ...], admin: bool, name: str | None,
                as_json: bool, home: Path | None) -> None:
    """Create a key and print its token, once: only its sha256 is stored.

    Each --collection must exist: the grant is bound to that collection and ends when it is deleted (a
    collection created again under the name is another one). Without --json the token alone goes to
    stdout (TOKEN=$(facelens keys create ...)), the rest to stderr.
    """
    from ..accountability.actor import Actor
    from ..server.keys import KeyStore

    if collections and not scopes:
        click.echo("facelens: error: give at least one --scope for the --collection(s)", err=True)
        sys.exit(2)
    if scopes and not collections:
        click.echo("facelens: error: --scope needs --collection (or use --admin)", err=True)
        sys.exit(2)
    try:
        with _action_log(home) as action_log:
            store = KeyStore.open(_home(home), action_log=action_log)
            try:
                new = store.create(name=name or "unnamed", admin=admin, grants={c: scopes for c in collections},
                                   actor=Actor.cli())
            finally:
                store.close()
    except FacelensError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({**new.key.to_dict(), "token": new.token}, indent=2))
        return
    rights = "global admin" if new.key.admin else "; ".join(
        f"{', '.join(sorted(s))} on {c!r}" for c, s in sorted(new.key.grants.items()))
    click.echo(f"created key {new.key.key_id} ({new.key.name}): {rights}", err=True)
    click.echo("the token below is shown only now; only its sha256 is stored", err=True)
    click.echo(new.token)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_home_option
def keys_list(as_json: bool, home: Path | None) -> None:
    """List the keys (never their tokens), revoked ones included."""
    from ..server.keys import KeyStore

    store = KeyStore.open(_home(home))
    try:
        rows = store.list_keys()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"keys": [k.to_dict() for k in rows]}, indent=2))
        return
    for k in rows:
        dead = set(k.dead_grants())
        rights = "admin" if k.admin else "; ".join(
            f"{c}: {','.join(sorted(s))}" + (" (dead: the collection was deleted)" if c in dead else "")
            for c, s in sorted(k.grants.items()))
        state = f"revoked {k.revoked}" if k.revoked else "active"
        click.echo(f"{k.key_id}  {k.name}  {rights}  created {k.created}  {state}")
    if not rows:
        click.echo("no keys")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print the revoked key as JSON.")
@_home_option
def keys_revoke(key_id: str, as_json: bool, home: Path | None) -> None:
    """Revoke KEY_ID: a running service refuses it from its next request on."""
    from ..accountability.actor import Actor
    from ..server.keys import KeyStore

    try:
        with _action_log(home) as action_log:
            store = KeyStore.open(_home(home), action_log=action_log)
            try:
                key = store.revoke(key_id, actor=Actor.cli())
            finally:
                store.close()
    except FacelensError as exc:
        _fail(exc)
    click.echo(json.dumps(key.to_dict(), indent=2) if as_json else f"revoked key {key.key_id} ({key.name})")


# -- search log ------------------------------------------------------------------------------------

@click.group()
def log() -> None:
    """Verify, checkpoint and export the search log (every search and compare the service ran)."""


def _log_file(home: Path | None) -> Path | str:
    """The home's log: its PostgreSQL database ($FACELENS_DATABASE, or HOME/facelens.toml) or its file."""
    from ..accountability.log import log_location

    try:
        return log_location(_home(home))
    except FacelensError as exc:
        _fail(exc)


def _signing_key_option(f: Any) -> Any:
    return click.option("--signing-key", "signing_key", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help="The log's signing key file (default: $FACELENS_LOG_SIGNING_KEY, else "
                                           "<home>/service/log-signing.key).")(f)


def _key_path(signing_key: Path | None, home: Path | None) -> Path:
    from ..accountability.log import default_signing_key_path

    return signing_key if signing_key is not None else default_signing_key_path(_home(home))


def _anchor(value: str | None) -> tuple[int, str] | None:
    from ..accountability.log import MAX_SEQ

    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or not 1 <= int(seq) <= MAX_SEQ or len(digest) != 64:
        raise click.BadParameter("use SEQ:HASH as printed by `facelens log verify`", param_hint="--anchor")
    return int(seq), digest.lower()


def _public_keys(given: tuple[Path, ...], signing_key: Path | None, home: Path | None) -> list[Any] | None:
    """The keys to trust: those given, else the public key beside the signing key, else the signing key's
    own; None when there is none (signatures then cannot be checked)."""
    from ..accountability.log import LogPublicKey, LogSigningKey, public_key_path

    if given:
        return [LogPublicKey.load(p) for p in given]
    key_path = _key_path(signing_key, home)
    if public_key_path(key_path).is_file():
        return [LogPublicKey.load(public_key_path(key_path))]
    if key_path.is_file():
        return [LogSigningKey.load(key_path).public_key]
    return None


@log.command("verify")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A checkpoint made by `facelens log checkpoint` and kept elsewhere: fail unless every entry up "
                   "to it is unchanged and still there.")
@click.option("--anchor", default=None, metavar="SEQ:HASH",
              help="A head recorded earlier (printed by this command): fail unless that entry is unchanged.")
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The log's public key (PEM, from `facelens log public-key`), your own copy; repeatable. "
                   "Default: the .pub file beside the signing key.")
@click.option("--file", "file", type=click.File("r"), default=None,
              help="Verify an exported JSON-lines file instead of the log itself.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_signing_key_option
@_home_option
def log_verify(checkpoint_file: Path | None, anchor: str | None, public_keys: tuple[Path, ...], file: Any,
               as_json: bool, signing_key: Path | None, home: Path | None) -> None:
    """Check the log, read-only: exit 0 when every entry is chained and signed (or covered by a
    checkpoint), 1 naming the first bad entry, or saying it is empty, missing, truncated or unsigned."""
    from ..accountability.log import Checkpoint, verify_lines, verify_log

    anchor_point = _anchor(anchor)
    try:
        keys = _public_keys(public_keys, signing_key, home)
        checkpoint = Checkpoint.load(checkpoint_file) if checkpoint_file is not None else None
    except FacelensError as exc:
        _fail(exc)
    if file is not None:
        report = verify_lines(file, public_keys=keys, anchor=anchor_point, checkpoint=checkpoint)
    else:
        report = verify_log(_log_file(home), public_keys=keys, anchor=anchor_point, checkpoint=checkpoint)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        sys.exit(0 if report.ok else 1)
    span = f"entries {report.first_seq}..{report.last_seq}" if report.entries else "no entries"
    if report.ok:
        which = "last entry" if file is not None else "head"
        head = f"; {which} {report.head_seq}:{report.head_hash}" if report.head_seq else ""
        click.echo(f"ok: {span} ({report.entries}), chain intact{head}")
    elif report.status == "broken" and report.first_bad_seq is not None:
        click.echo(f"BROKEN at entry {report.first_bad_seq}: {report.problem}")
    else:
        click.echo(f"{report.status.upper().replace('_', ' ')}: {report.problem}")
    if report.public_keys and report.status not in ("missing", "not_a_log"):
        click.echo(f"signatures checked with public key {', '.join(report.public_keys)} "
                   f"({report.signed} signed, {report.unsigned} unsigned entries read)")
    for note in report.notes:
        click.echo(f"note: {note}")
    sys.exit(0 if report.ok else 1)


@log.command("public-key")
@click.option("--json", "as_json", is_flag=True, help="Print {\"fingerprint\", \"pem\"}.")
@_signing_key_option
@_home_option
def log_public_key(as_json: bool, signing_key: Path | None, home: Path | None) -> None:
    """Print the public key of the log's signing key (PEM), for auditors; its fingerprint goes to stderr.
    The signing key is created if there is none yet."""
    from ..accountability.log import LogSigningKey

    path = _key_path(signing_key, home)
    existed = path.is_file()
    try:
        key = LogSigningKey.load_or_create(path)
    except FacelensError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"fingerprint": key.public_key.fingerprint, "pem": key.public_key.pem(),
                               "signing_key": str(path)}, indent=2))
        return
    if not existed:
        click.echo(f"facelens: created the log signing key {path}", err=True)
    click.echo(f"fingerprint {key.public_key.fingerprint} (signing key {path})", err=True)
    click.echo(key.public_key.pem(), nl=False)


@log.command("checkpoint")
@click.option("--out", "out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Write the checkpoint to this file; - prints it (default: "
                   "HOME/service/checkpoints/checkpoint-SEQ.json, where the transparency report looks for it).")
@_signing_key_option
@_home_option
def log_checkpoint(out: Path | None, signing_key: Path | None, home: Path | None) -> None:
    """Verify the log, then write a signed checkpoint of its head (JSON: seq, hash, time, public_key,
    signature) to HOME/service/checkpoints/ (where `facelens report transparency` finds it), to --out
    FILE, or to stdout (--out -). Copy it somewhere this host cannot change too; `log verify --checkpoint
    FILE` then proves every entry up to it unchanged. Exit 1 (no checkpoint) when the log does not verify."""
    import os

    from ..accountability.log import LogSigningKey, make_checkpoint
    from ..accountability.transparency import CHECKPOINT_DIR
    from ..store.home import service_dir

    path = _key_path(signing_key, home)
    if not path.is_file():
        click.echo(f"facelens: error: no log signing key at {path} (the service makes it when it first writes "
                   f"the log)", err=True)
        sys.exit(1)
    try:
        checkpoint = make_checkpoint(_log_file(home), LogSigningKey.load(path))
    except FacelensError as exc:
        click.echo(f"facelens: error: {exc}", err=True)
        sys.exit(1)
    text = json.dumps(checkpoint.to_dict(), indent=2) + "\n"
    if out is not None and str(out) == "-":
        click.echo(text, nl=False)
        return
    try:
        if out is None:
            folder = service_dir(_home(home)) / CHECKPOINT_DIR
            folder.mkdir(exist_ok=True)
            out = folder / f"checkpoint-{checkpoint.seq}.json"
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # never a torn checkpoint where the report reads
        tmp.write_text(text)
        os.replace(tmp, out)
    except OSError as exc:
        click.echo(f"facelens: error: cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(3)
    click.echo(f"checkpoint of entry {checkpoint.seq} written to {out}", err=True)


@log.command("export")
@click.option("--since", default=None, metavar="TIME", help="Only entries from this ISO 8601 time (UTC if no zone).")
@click.option("--after", "after", type=click.IntRange(min=0, max=2**63 - 1), default=0,
              help="Only entries after this seq.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default: stdout).")
@_home_option
def log_export(since: str | None, after: int, output: Any, home: Path | None) -> None:
    """Write the entries as JSON lines, oldest first, each with its hash and signature (verifiable with
    `verify --file`). Read-only."""
    from ..accountability.log import canonical_json, read_entries

    path = _log_file(home)
    if isinstance(path, Path) and not path.is_file():
        click.echo(f"facelens: error: no search log at {path}", err=True)
        sys.exit(3)
    try:
        for entry in read_entries(path, since=since, after_seq=after):
            output.write(canonical_json(entry.to_dict()) + "\n")
    except FacelensError as exc:
        _fail(exc)
