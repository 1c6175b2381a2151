"""Where collections live, and which names they may have."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ..errors import CollectionNotFoundError, InvalidArgumentError

__all__ = ["collection_dir", "collection_generation", "default_home", "list_collection_names", "service_dir",
           "validate_collection_name"]

# Rekognition's CollectionId pattern is [a-zA-Z0-9_.\-]+ up to 255 characters. A name is also a folder
# name here, so a leading dot (".", "..", hidden folders) is refused too.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def validate_collection_name(name: str) -> str:
    """Return ``name`` if it is a valid collection id, else raise :class:`InvalidArgumentError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '.', '-', not starting "
            f"with '.' or '-'")
    return name


def default_home() -> Path:
    """``FACELENS_HOME`` if set, else the per-user data folder (XDG on Linux)."""
    env = os.environ.get("FACELENS_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "facelens"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "facelens"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "facelens"


def collection_dir(home: Path, name: str) -> Path:
    return home / "collections" / validate_collection_name(name)


def list_collection_names(home: Path) -> list[str]:
    root = home / "collections"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "faces.sqlite").is_file() and _NAME.fullmatch(p.name))


def collection_generation(home: Path, name: str) -> str:
    """The generation (identity) of the collection named ``name`` now, read from its files without
    opening it for writing; raises :class:`CollectionNotFoundError` when there is none."""
    import sqlite3

    from .collection import _TOMBSTONE, DB_NAME, legacy_generation

    db = collection_dir(home, name) / DB_NAME
    try:
        fd = os.open(db, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CollectionNotFoundError(f"no collection named {name!r}") from None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
        st, held = os.stat(db), os.fstat(fd)
    except (sqlite3.Error, OSError):
        raise CollectionNotFoundError(f"no collection named {name!r}") from None
    finally:
        os.close(fd)
    # what was read is the collection at the path now, not one a deletion renamed away meanwhile (a
    # renamed folder never comes back, so the descriptor opened first pins the file read)
    if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino) or _TOMBSTONE in meta:
        raise CollectionNotFoundError(f"no collection named {name!r}")
    return meta.get("generation") or legacy_generation(meta)


def service_dir(home: Path) -> Path:
    """The folder under a facelens home holding the key file, the signed log and its signing key (mode 0700)."""
    path = Path(home).expanduser() / "service"
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError:  # pragma: no cover - a file system without modes
        pass
    return path
