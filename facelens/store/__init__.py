"""Collections on disk: face metadata in SQLite (the source of truth), vectors in a FAISS index.

A collection is a folder ``<home>/collections/<name>/`` holding ``faces.sqlite``, the float16 re-rank
file, and, above 100,000 faces, the saved approximate index ``vectors.<seq>.faiss`` (``seq``: the last
change of the SQLite change log that the file contains; the exact index below that size holds raw
embeddings and is rebuilt from SQLite on open instead). SQLite commits each indexed image in one
transaction (WAL, synchronous=FULL); the vector index is a cache of SQLite's embeddings, brought up to
date from the change log when opened, and rebuilt from SQLite when its file is missing or damaged. So a
process killed at any moment loses at most the image it was indexing, and no repair is ever manual.

A collection deleted (or deleted and created again) by any process is gone for every process that holds
it open from its next operation on; erasing faces leaves none of their bytes in the collection's files.
See docs/collections.md.
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
