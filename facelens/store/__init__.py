"""Collections on disk: face metadata in SQLite (the source of truth), vectors in a FAISS index.

A collection is a folder ``<home>/collections/<name>/`` holding ``faces.sqlite`` and the persisted
vector index ``vectors.<seq>.faiss`` (``seq``: the last change of the SQLite change log that the file
contains). SQLite commits each indexed image in one transaction (WAL, synchronous=FULL); the vector
index is a cache of SQLite's embeddings that is brought up to date from the change log when opened,
and rebuilt from SQLite when its file is missing or damaged. So a process killed at any moment loses at
most the image it was indexing, and no repair is ever manual.
"""

from __future__ import annotations

from .collection import CheckReport, FaceRecord, FaceStore, StoredFace
from .home import collection_dir, collection_generation, default_home, list_collection_names, validate_collection_name

__all__ = [
    "CheckReport",
    "FaceRecord",
    "FaceStore",
    "StoredFace",
    "collection_dir",
    "collection_generation",
    "default_home",
    "list_collection_names",
    "validate_collection_name",
]
