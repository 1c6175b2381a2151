"""Writing the files of a report (a page and its JSON) so that a reader never sees half of one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_files"]


def write_files(out_dir: str | Path, contents: Mapping[str, str]) -> tuple[Path, ...]:
    """Write each ``name: text`` of ``contents`` into ``out_dir`` (created if needed), each file replaced
    atomically (written beside it, then renamed); returns the paths in order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in contents.items():
        path = out / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return tuple(paths)
