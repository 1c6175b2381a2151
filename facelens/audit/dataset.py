"""Labelled face datasets for audits: which image shows whom, and which demographic labels it carries.

Readers turn the on-disk layouts facelens knows (a CSV manifest, LFW, UTKFace, the congress-past
portraits, one folder per person) into one :class:`Dataset`; :func:`embed_dataset` runs an engine over
it once (optionally cached) and returns an :class:`EmbeddedDataset`, the arrays the audit metrics use.

Array conventions: row ``i`` of every array is image ``dataset.paths[i]``; labels are ``str`` arrays in
which ``''`` means unknown; embeddings are ``(n, d) float32``, L2-normalised, zero rows where no face
was found.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import FacelensError, ImageDecodeError, InvalidArgumentError

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = [
    "AGE_BANDS",
    "DatasetError",
    "Dataset",
    "DatasetKind",
    "EmbeddedDataset",
    "Pairs",
    "age_band",
    "embed_dataset",
    "read_congress",
    "read_congress_historical",
    "read_dataset",
    "read_folder_tree",
    "read_lfw",
    "read_manifest",
    "read_utkface",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
AGE_BANDS = ("0-17", "18-29", "30-44", "45-59", "60+")
"""Age bands of the ``age_band`` group column: lower bounds 0, 18, 30, 45, 60 years."""
_AGE_LOWER = (0, 18, 30, 45, 60)
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")
CONGRESS_PORTRAIT_YEAR = 2014
CONGRESS_PARTIES = {"100": "Democrat", "200": "Republican"}
CACHE_FORMAT_VERSION = 1

_CAVEAT = ("Demographic labels are coarse annotations made by others (not self-identification) and are "
           "sometimes wrong; read per-group figures as indicative.")
_UTK_NAME = re.compile(r"(\d{1,3})_(\d+)_(\d+)_(\d+)\.jpg(?:\.chip\.jpg)?", re.IGNORECASE)
_LFW_NAME = re.compile(r"(.+)_(\d{4})")

DatasetKind = Literal["manifest", "lfw", "utkface", "congress", "folder"]


class DatasetError(InvalidArgumentError):
    """A dataset on disk is missing, malformed or empty.

    ``path`` is the file or folder at fault and ``line`` the 1-based line in it (None when the whole
    file is at fault); both are in the message, ``path:line: what is wrong``.
    """

    def __init__(self, message: str, *, path: str | Path, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


# -- the dataset ----------------------------------------------------------------------------------

def _str_array(values: Iterable[str]) -> npt.NDArray[np.str_]:
    out = np.asarray(list(values), dtype=np.str_)
    return out if out.size else np.zeros(0, dtype="<U1")


def _selection(selection: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    """Row indices, in the given order, of a boolean mask (n,) or of integer indices."""
    sel = np.asarray(selection)
    if sel.dtype == np.bool_:
        if sel.shape != (n,):
            raise InvalidArgumentError(f"a boolean mask must have shape ({n},), got {sel.shape}")
        return np.flatnonzero(sel).astype(np.int64)
    if sel.size == 0:
        return np.zeros(0, dtype=np.int64)
    if sel.ndim != 1 or not np.issubdtype(sel.dtype, np.integer):
        raise InvalidArgumentError("select rows with a boolean mask or a 1-d array of integer indices")
    idx = sel.astype(np.int64)
    if idx.min() < 0 or idx.max() >= n:
        raise InvalidArgumentError(f"row indices must be in [0, {n}), got {int(idx.min())}..{int(idx.max())}")
    if np.unique(idx).size != idx.size:
        raise InvalidArgumentError("row indices must not repeat")
    return idx


def age_band(age: int | None) -> str:
    """The :data:`AGE_BANDS` label of an age in years (``''`` for None or a negative age)."""
    if age is None or age < 0:
        return ""
    return AGE_BANDS[int(np.searchsorted(_AGE_LOWER, age, side="right")) - 1]


@dataclass(frozen=True, slots=True, eq=False)
class Pairs:
    """A verification protocol: which pairs of images to score (LFW's ``pairs.txt``).

    ``a`` and ``b`` are (m,) int64 indices into ``Dataset.paths``; ``same`` (m,) bool is True for a
    pair of the same person; ``fold`` (m,) int64 numbers the cross-validation fold (0-based).
    """

    a: npt.NDArray[np.int64]
    b: npt.NDArray[np.int64]
    same: npt.NDArray[np.bool_]
    fold: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        for name in ("a", "b", "fold"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        object.__setattr__(self, "same", np.asarray(self.same, dtype=np.bool_).reshape(-1))
        if not len(self.a) == len(self.b) == len(self.same) == len(self.fold):
            raise InvalidArgumentError("pairs: a, b, same and fold must have the same length")

    def __len__(self) -> int:
        return len(self.a)

    def _remap(self, new_index: npt.NDArray[np.int64]) -> Pairs:
        """The pairs whose two images both survive; ``new_index[old]`` is -1 for a dropped image."""
        a, b = new_index[self.a], new_index[self.b]
        keep = (a >= 0) & (b >= 0)
        return Pairs(a=a[keep], b=b[keep], same=self.same[keep], fold=self.fold[keep])


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """Images with an identity and demographic labels each.

    ``paths``: (n,) absolute image paths. ``subjects``: (n,) str, who each image shows; where a dataset
    has no identity labels (UTKFace) each image is its own subject, named by its file name.
    ``groups``: group column (``sex``, ``race``, ``age_band``...) -> (n,) str label of each image, ``''``
    when unknown. ``pairs``: a fixed verification protocol, when the dataset ships one.
    ``description``: where the data comes from, its counts, and how far its labels can be trusted.
    ``attributes``: other per-image (n,) str columns that are not demographic groups (the congress
    portraits' ``photo``, ``'a'`` or ``'b'``).
    """

    name: str
    root: Path
    paths: tuple[Path, ...]
    subjects: npt.NDArray[np.str_]
    groups: dict[str, npt.NDArray[np.str_]]
    pairs: Pairs | None = None
    description: str = ""
    attributes: dict[str, npt.NDArray[np.str_]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        if not all(p.is_absolute() for p in self.paths):
            raise InvalidArgumentError("dataset paths must be absolute")
        object.__setattr__(self, "subjects", _str_array(self.subjects))
        if self.subjects.shape != (n,):
            raise InvalidArgumentError(f"subjects must have shape ({n},), got {self.subjects.shape}")
        for attr in ("groups", "attributes"):
            columns = {str(k): _str_array(v) for k, v in getattr(self, attr).items()}
            for k, v in columns.items():
                if v.shape != (n,):
                    raise InvalidArgumentError(f"{attr[:-1]} column {k!r} must have shape ({n},), got {v.shape}")
            object.__setattr__(self, attr, columns)
        if self.pairs is not None and len(self.pairs) and (
                min(self.pairs.a.min(), self.pairs.b.min()) < 0 or max(self.pairs.a.max(), self.pairs.b.max()) >= n):
            raise InvalidArgumentError(f"pair indices must be in [0, {n})")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, selection: npt.ArrayLike) -> Dataset:
        """The images selected by a boolean mask (n,) or by integer indices (kept in the given order).

        Pairs survive when both their images do, with indices renumbered.
        """
        idx = _selection(selection, len(self))
        pairs = None
        if self.pairs is not None:
            new_index = np.full(len(self), -1, dtype=np.int64)
            new_index[idx] = np.arange(len(idx), dtype=np.int64)
            pairs = self.pairs._remap(new_index)
        note = f" Subset: {len(idx):,} of these {len(self):,} images."
        return Dataset(name=self.name, root=self.root, paths=tuple(self.paths[i] for i in idx),
                       subjects=self.subjects[idx], groups={k: v[idx] for k, v in self.groups.items()},
                       pairs=pairs, description=self.description + note,
                       attributes={k: v[idx] for k, v in self.attributes.items()})

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts: images, subjects, images per label of each group column (``''``: unknown),
        and the pairs of the protocol when there is one."""
        per_subject = Counter(self.subjects.tolist())
        out: dict[str, Any] = {
            "name": self.name,
            "root": str(self.root),
            "images": len(self),
            "subjects": len(per_subject),
            "subjects_with_2plus_images": sum(c >= 2 for c in per_subject.values()),
            "groups": {col: dict(Counter(v.tolist()).most_common()) for col, v in self.groups.items()},
            "pairs": None,
        }
        if self.pairs is not None:
            out["pairs"] = {"same": int(self.pairs.same.sum()), "different": int((~self.pairs.same).sum()),
                            "folds": len(np.unique(self.pairs.fold))}
        return out


# -- readers --------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _require_dir(root: str | Path) -> Path:
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatasetError("folder does not exist" if not root.exists() else "not a folder", path=root)
    return root


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the (line number, row with stripped values) of each non-blank row of ``path``.

    Refuses a missing file, a header without the ``required`` columns or with a column twice, and rows
    with more or fewer fields than the header.
    """
    if not path.is_file():
        raise DatasetError("file does not exist", path=path)
    rows: list[tuple[int, dict[str, str]]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        try:
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise DatasetError(f"empty file: expected a header line with columns {', '.join(required)}",
                                   path=path)
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(f"missing column(s) {', '.join(missing)} in the header (found: "
                                   f"{', '.join(header)})", path=path, line=1)
            duplicated = sorted(c for c, k in Counter(header).items() if k > 1)
            if duplicated:
                raise DatasetError(f"column(s) {', '.join(duplicated)} appear more than once in the header",
                                   path=path, line=1)
            reader.fieldnames = header
            for row in reader:
                if None in row or None in row.values():
                    got = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or ())
                    raise DatasetError(f"expected {len(header)} fields, got {got}", path=path, line=reader.line_num)
                values = {k: v.strip() for k, v in row.items()}
                if any(values.values()):
                    rows.append((reader.line_num, values))
        except UnicodeDecodeError as exc:  # text is decoded in blocks: the line is not known
            raise DatasetError(f"not a UTF-8 text file ({exc})", path=path) from None
        except csv.Error as exc:
            raise DatasetError(f"not a readable CSV line ({exc})", path=path, line=reader.line_num + 1) from None
    return header, rows


def _resolve(base: Path, value: str) -> Path:
    return Path(os.path.normpath(base / value))


def read_manifest(csv_path: str | Path, *, name: str | None = None) -> Dataset:
    """Read the generic audit format: a CSV file with a header, one image per row.

    Required columns: ``path`` (relative to the CSV file's folder, or absolute) and ``subject`` (who the
    image shows: any non-empty string; images of one person share it). Every other column is a group
    column, e.g. ``sex``, ``race``, ``age_band``; an empty cell means unknown. ``name`` defaults to the
    file's stem. Raises :class:`DatasetError` naming the file and line of the first problem.
    """
    path = Path(csv_path).absolute()
    header, rows = _read_csv(path, ("path", "subject"))
    group_cols = [c for c in header if c not in ("path", "subject")]
    paths: list[Path] = []
    subjects: list[str] = []
    groups: dict[str, list[str]] = {c: [] for c in group_cols}
    seen: dict[Path, int] = {}
    for line, row in rows:
        if not row["path"]:
            raise DatasetError("empty path", path=path, line=line)
        if not row["subject"]:
            raise DatasetError(f"empty subject for {row['path']}", path=path, line=line)
        image = _resolve(path.parent, row["path"])
        if not image.is_file():
            raise DatasetError(f"image {row['path']} does not exist ({image})", path=path, line=line)
        if image in seen:
            raise DatasetError(f"image {row['path']} is listed twice (first on line {seen[image]})",
                               path=path, line=line)
        seen[image] = line
        paths.append(image)
        subjects.append(row["subject"])
        for c in group_cols:
            groups[c].append(row[c])
    if not paths:
        raise DatasetError("no images listed", path=path)
    n_subjects = len(set(subjects))
    cols = ", ".join(group_cols) if group_cols else "none"
    description = (f"Manifest {path}: {len(paths):,} images of {n_subjects:,} subjects; group columns: {cols}. "
                   f"Subjects and group labels are as given by the manifest's author. {_CAVEAT}")
    return Dataset(name=name or path.stem, root=path.parent, paths=tuple(paths), subjects=_str_array(subjects),
                   groups={c: _str_array(v) for c, v in groups.items()}, description=description)


def _lfw_dirs(root: Path) -> tuple[Path, Path]:
    """(images folder, folder holding protocol/ and labels/) of an LFW root or of its images folder."""
    if (root / "images").is_dir():
        return root / "images", root
    if root.name == "images" and ((root.parent / "protocol").is_dir() or (root.parent / "labels").is_dir()):
        return root, root.parent
    return root, root


def _read_lfw_labels(path: Path, index: dict[str, int], n: int) -> tuple[dict[str, list[str]], dict[str, int]]:
    header, rows = _read_csv(path, ("image",))
    sex = [""] * n
    race = [""] * n
    counts = Counter[str]()
    for _, row in rows:
        i = index.get(row["image"])
        if i is None:
            counts["unknown_image"] += 1
            continue
        s = row.get("sex_afifi", "")
        sex[i] = s if s in ("M", "F") else ""
        r = row.get("race_mica", "")
        race[i] = "multiple" if "," in r else r
        counts["sex"] += bool(sex[i])
        counts["race"] += bool(race[i])
        counts["multiple"] += race[i] == "multiple"
    groups: dict[str, list[str]] = {}
    if "sex_afifi" in header:
        groups["sex"] = sex
    if "race_mica" in header:
        groups["race"] = race
    return groups, counts


def _read_lfw_pairs(path: Path, index: dict[tuple[str, int], int]) -> Pairs:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(i + 1, ln.split()) for i, ln in enumerate(f) if ln.strip()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not a UTF-8 text file ({exc})", path=path) from None
    if not lines:
        raise DatasetError("empty pairs file: expected a first line such as '10 300'", path=path)
    first_line, head = lines[0]
    try:
        numbers = [int(v) for v in head]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers) < 1:
        raise DatasetError(f"expected '<folds> <pairs per fold and kind>' such as '10 300', got {' '.join(head)!r}",
                           path=path, line=first_line)
    folds, per_fold = (1, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    rows = lines[1:]
    if len(rows) != 2 * folds * per_fold:
        raise DatasetError(f"expected {2 * folds * per_fold} pair lines ({folds} folds x {per_fold} same + "
                           f"{per_fold} different), found {len(rows)}", path=path)
    a, b, same, fold = [], [], [], []
    for k, (line, fields) in enumerate(rows):
        try:
            if len(fields) == 3:
                first, second = (fields[0], int(fields[1])), (fields[0], int(fields[2]))
            elif len(fields) == 4:
                first, second = (fields[0], int(fields[1])), (fields[2], int(fields[3]))
            else:
                raise ValueError
        except ValueError:
            raise DatasetError(f"expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(fields)!r}",
                               path=path, line=line) from None
        for person, number in (first, second):
            if (person, number) not in index:
                raise DatasetError(f"image {person}_{number:04d} is not in the dataset", path=path, line=line)
        a.append(index[first])
        b.append(index[second])
        same.append(len(fields) == 3)
        fold.append(k // (2 * per_fold))
    return Pairs(a=np.asarray(a, dtype=np.int64), b=np.asarray(b, dtype=np.int64),
                 same=np.asarray(same, dtype=np.bool_), fold=np.asarray(fold, dtype=np.int64))


def read_lfw(root: str | Path, *, name: str = "lfw") -> Dataset:
    """Read Labeled Faces in the Wild: ``root/images/<Name>/<Name>_NNNN.jpg`` (``root`` may also be the
    images folder itself).

    Optional, next to ``images/``: ``protocol/pairs.txt``, the View 2 verification protocol (first line
    ``10 300``, then per fold 300 lines ``name n1 n2`` of the same person followed by 300 lines
    ``name1 n1 name2 n2`` of different people), read into ``pairs``; and ``labels/lfw_images.csv``
    (columns ``image`` = ``<Name>/<Name>_NNNN.jpg``, ``sex_afifi``, ``race_mica``), read into the group
    columns ``sex`` (``M``/``F``; ``ambiguous`` and blanks become ``''``) and ``race`` (race_mica labels
    whole identities, only some of them; an identity with several labels joined by commas gets
    ``'multiple'``, so that no image is counted in two groups).
    """
    root = _require_dir(root)
    images_dir, base = _lfw_dirs(root)
    paths: list[Path] = []
    subjects: list[str] = []
    for person in sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(p for p in person.iterdir() if _is_image(p)):
            paths.append(image)
            subjects.append(person.name)
    if not paths:
        raise DatasetError("no images found (expected images/<Name>/<Name>_NNNN.jpg)", path=images_dir)
    by_name = {f"{p.parent.name}/{p.name}": i for i, p in enumerate(paths)}
    by_number: dict[tuple[str, int], int] = {}
    for i, p in enumerate(paths):
        m = _LFW_NAME.fullmatch(p.stem)
        if m and m.group(1) == p.parent.name:
            by_number[(m.group(1), int(m.group(2)))] = i
    groups: dict[str, list[str]] = {}
    label_note = " No demographic labels (labels/lfw_images.csv absent)."
    labels_path = base / "labels" / "lfw_images.csv"
    if labels_path.is_file():
        groups, counts = _read_lfw_labels(labels_path, by_name, len(paths))
        label_note = (f" Labels from {labels_path.name}: sex (column sex_afifi) known for {counts['sex']:,} images;"
                      f" race (column race_mica, given for some identities only) known for {counts['race']:,},"
                      f" of which {counts['multiple']:,} carry several labels and are grouped as 'multiple'.")
    pairs = None
    pair_note = " No pairs protocol (protocol/pairs.txt absent)."
    pairs_path = base / "protocol" / "pairs.txt"
    if pairs_path.is_file():
        pairs = _read_lfw_pairs(pairs_path, by_number)
        pair_note = (f" Verification protocol {pairs_path.name}: {int(pairs.same.sum()):,} same-person and "
                     f"{int((~pairs.same).sum()):,} different-person pairs in {len(np.unique(pairs.fold))} folds.")
    per_subject = Counter(subjects)
    description = (f"Labeled Faces in the Wild (news photographs of public figures) read from "
                   f"{root}: {len(paths):,} images of {len(per_subject):,} people, "
                   f"{sum(c >= 2 for c in per_subject.values()):,} of them with 2+ images.{pair_note}{label_note} "
                   f"{_CAVEAT}")
    return Dataset(name=name, root=root, paths=tuple(paths), subjects=_str_array(subjects),
                   groups={c: _str_array(v) for c, v in groups.items()}, pairs=pairs, description=description)


def read_folder_tree(root: str | Path, *, name: str | None = None) -> Dataset:
    """Read one folder per subject: ``root/<subject>/**/<image>`` (jpg, jpeg, png, bmp, webp, any case).

    The subject is the name of the top-level folder; images directly in ``root`` belong to nobody and
    are skipped (counted in the description), as are hidden files and folders. No group columns.
    """
    root = _require_dir(root)
    paths: list[Path] = []
    subjects: list[str] = []
    loose = sum(_is_image(p) for p in root.iterdir())
    for person in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(person.rglob("*")):
            if _is_image(image) and not any(part.startswith(".") for part in image.relative_to(person).parts):
                paths.append(image)
                subjects.append(person.name)
    if not paths:
        raise DatasetError("no images found in subject folders (expected <subject>/<image>.jpg)", path=root)
    skipped = f" {loose:,} images directly in the folder (no subject) were skipped." if loose else ""
    description = (f"Folder tree {root}: {len(paths):,} images of {len(set(subjects)):,} subjects, one folder per "
                   f"subject.{skipped} No demographic labels.")
    return Dataset(name=name or root.name, root=root, paths=tuple(paths), subjects=_str_array(subjects), groups={},
                   description=description)


def _utk_from_labels(path: Path, images_dir: Path) -> tuple[list[Path], list[tuple[str, str, str]], int]:
    _, rows = _read_csv(path, ("file", "age", "gender", "race"))
    paths: list[Path] = []
    labels: list[tuple[str, str, str]] = []
    skipped = 0
    for line, row in rows:
        if row.get("parse_ok", "1") not in ("1", "True", "true"):
            skipped += 1
            continue
        image = images_dir / row["file"]
        if not row["file"] or not image.is_file():
            raise DatasetError(f"image {row['file']!r} does not exist in {images_dir}", path=path, line=line)
        sex = {"0": "M", "1": "F"}.get(row["gender"], row["gender"])
        race = row["race"]
        if not race and row.get("race_code", "").isdigit() and int(row["race_code"]) < len(UTKFACE_RACES):
            race = UTKFACE_RACES[int(row["race_code"])]
        age = age_band(int(row["age"])) if row["age"].isdigit() else ""
        paths.append(image)
        labels.append((sex if sex in ("M", "F") else "", race, age))
    return paths, labels, skipped


def _utk_from_names(images_dir: Path) -> tuple[list[Path], list[tuple[str, str, str]], int]:
    paths: list[Path] = []
    labels: list[tuple[str, str, str]] = []
    skipped = 0
    for image in sorted(p for p in images_dir.iterdir() if _is_image(p)):
        m = _UTK_NAME.fullmatch(image.name)
        if m is None or m.group(2) not in ("0", "1") or int(m.group(3)) >= len(UTKFACE_RACES):
            skipped += 1
            continue
        paths.append(image)
        labels.append(("MF"[int(m.group(2))], UTKFACE_RACES[int(m.group(3))], age_band(int(m.group(1)))))
    return paths, labels, skipped


def read_utkface(root: str | Path, *, name: str = "utkface") -> Dataset:
    """Read UTKFace: images in ``root/images/`` (or ``root`` itself) and, optionally, ``root/labels.csv``
    (columns ``file``, ``age``, ``gender`` M/F, ``race``, optional ``race_code`` and ``parse_ok``).

    Without labels.csv the labels come from the file names ``age_gender_race_date.jpg[.chip.jpg]``
    (gender 0 = M, 1 = F; race 0..4 = White, Black, Asian, Indian, Others); names that do not parse, and
    labels.csv rows with ``parse_ok`` not 1, are skipped and counted in the description. Group columns:
    ``sex``, ``race``, ``age_band`` (:data:`AGE_BANDS`). UTKFace has no identity labels: each image is its
    own subject (its file name), so all pairs count as different people although the set holds
    near-duplicates and public figures; set those aside before reading false-match rates off it.
    """
    root = _require_dir(root)
    images_dir = root / "images" if (root / "images").is_dir() else root
    labels_path = root / "labels.csv"
    if labels_path.is_file():
        paths, labels, skipped = _utk_from_labels(labels_path, images_dir)
        source = f"labels from {labels_path.name}"
        skip_note = f" {skipped:,} rows with parse_ok != 1 were skipped." if skipped else ""
    else:
        paths, labels, skipped = _utk_from_names(images_dir)
        source = "labels parsed from the file names"
        skip_note = (f" {skipped:,} images whose names are not age_gender_race_date.jpg were skipped."
                     if skipped else "")
    if not paths:
        raise DatasetError(f"no UTKFace images found ({source}){skip_note}", path=images_dir)
    sex, race, band = (list(col) for col in zip(*labels, strict=True))
    description = (f"UTKFace face crops (scraped from the web) read from {root}, {source}: {len(paths):,} "
                   f"images.{skip_note} No identity labels: each image is its own subject, although the set holds "
                   f"public figures and near-duplicate images of one person, which inflate impostor scores at "
                   f"strict thresholds. Groups: sex, race (White, Black, Asian, Indian, Others) and age_band "
                   f"(annotated, partly estimated ages). {_CAVEAT}")
    return Dataset(name=name, root=root, paths=tuple(paths), subjects=_str_array(p.name for p in paths),
                   groups={"sex": _str_array(sex), "race": _str_array(race), "age_band": _str_array(band)},
                   description=description)


def _member_image(root: Path, value: str, *, path: Path, line: int) -> Path:
    """A members.csv photo column resolved under ``root``; DatasetError naming the row when it is missing."""
    image = _resolve(root, value)
    if not image.is_file():
        raise DatasetError(f"image {value} does not exist ({image})", path=path, line=line)
    return image


def read_congress(root: str | Path, *, name: str = "congress-past") -> Dataset:
    """Read the congress-past portraits: ``root/members.csv`` (columns ``bioguide``, ``chamber``,
    ``party_code``, ``born``, ``photo_a``, ``photo_b``; optional ``name``) and the images it names,
    relative to ``root``.

    Subject: the bioguide id. Group columns: ``chamber``; ``party`` (party_code 100 = Democrat,
    200 = Republican, anything else ``other``); ``age_band``, the age in 2014, the year of the ``a``
    portraits, from the birth year (a ``b`` photo may be younger). Attributes: ``photo``, ``'a'`` or
    ``'b'`` (``a``: the 2014 portrait, the usual probe; ``b``: another official photo, its genuine mate),
    and ``name``. An empty photo cell is skipped.
    """
    root = _require_dir(root)
    path = root / "members.csv"
    header, _ = _read_csv(path, ("bioguide",))
    if "photo" in header and "photo_a" not in header:
        return read_congress_historical(root, name="congress-historical" if name == "congress-past" else name)
    _, rows = _read_csv(path, ("bioguide", "chamber", "party_code", "born", "photo_a", "photo_b"))
    paths: list[Path] = []
    columns: dict[str, list[str]] = {k: [] for k in ("subject", "chamber", "party", "age_band", "photo", "name")}
    members = 0
    for line, row in rows:
        if not row["bioguide"]:
            raise DatasetError("empty bioguide id", path=path, line=line)
        members += 1
        age = CONGRESS_PORTRAIT_YEAR - int(row["born"]) if row["born"].isdigit() else None
        for which in ("a", "b"):
            value = row[f"photo_{which}"]
            if not value:
                continue
            paths.append(_member_image(root, value, path=path, line=line))
            columns["subject"].append(row["bioguide"])
            columns["chamber"].append(row["chamber"])
            columns["party"].append(CONGRESS_PARTIES.get(row["party_code"], "other"))
            columns["age_band"].append(age_band(age))
            columns["photo"].append(which)
            columns["name"].append(row.get("name", ""))
    if not paths:
        raise DatasetError("no images listed", path=path)
    n_a = columns["photo"].count("a")
    description = (f"Official portraits of former members of the US Congress (US government works, public domain) "
                   f"read from {root}: {len(paths):,} images of {members:,} members; {n_a:,} 'a' photos (2014 "
                   f"portraits, 450x550) and {len(paths) - n_a:,} 'b' photos (another official photo, often older, "
                   f"smaller or greyscale; a few may be the 'a' portrait at another resolution). Groups: chamber, "
                   f"party (from party_code) and age_band, the age in {CONGRESS_PORTRAIT_YEAR} from the birth year. "
                   f"Some members also appear in LFW (see lfw_name_overlap.csv). Chamber, party and birth year "
                   f"come from official records; an age band is a coarse label.")
    return Dataset(name=name, root=root, paths=tuple(paths), subjects=_str_array(columns["subject"]),
                   groups={k: _str_array(columns[k]) for k in ("chamber", "party", "age_band")},
                   description=description,
                   attributes={k: _str_array(columns[k]) for k in ("photo", "name")})


def _era(born: str) -> str:
    """A coarse birth-era label for historical portraits: the photographic technique changes with it."""
    if not born.isdigit():
        return ""
    year = int(born)
    return "born<1850" if year < 1850 else ("born1850-1899" if year < 1900 else "born1900+")


def read_congress_historical(root: str | Path, *, name: str = "congress-historical") -> Dataset:
    """Read congress-historical: ``root/members.csv`` (columns ``bioguide``, ``photo``; optional ``name``,
    ``born``, ``chamber``) with one official portrait per former member, every row a different person.

    Subject: the bioguide id. Groups: ``chamber`` and ``era`` (birth year before 1850, 1850-1899,
    1900 and later: the oldest portraits are engravings or paintings). Attribute: ``name``. An empty
    photo cell is skipped. Every pair of its images is a pair of different people (save the rare person
    under two bioguide ids, which the near-duplicate rule sets aside).
    """
    root = _require_dir(root)
    path = root / "members.csv"
    _, rows = _read_csv(path, ("bioguide", "photo"))
    paths: list[Path] = []
    columns: dict[str, list[str]] = {k: [] for k in ("subject", "chamber", "era", "name")}
    for line, row in rows:
        if not row["bioguide"]:
            raise DatasetError("empty bioguide id", path=path, line=line)
        value = row["photo"]
        if not value:
            continue
        paths.append(_member_image(root, value, path=path, line=line))
        columns["subject"].append(row["bioguide"])
        columns["chamber"].append(row.get("chamber", "") or "")
        columns["era"].append(_era(row.get("born", "") or ""))
        columns["name"].append(row.get("name", "") or "")
    if not paths:
        raise DatasetError("no images listed", path=path)
    description = (f"One official portrait each of {len(paths):,} former members of the US Congress (US government "
                   f"works / public domain) read from {root}: every image a different person; many are old, "
                   f"small, greyscale, engravings or paintings. Groups: chamber, and era from the birth year.")
    return Dataset(name=name, root=root, paths=tuple(paths), subjects=_str_array(columns["subject"]),
                   groups={k: _str_array(columns[k]) for k in ("chamber", "era")}, description=description,
                   attributes={"name": _str_array(columns["name"])})


def _looks_like_lfw(images_dir: Path) -> bool:
    """True when the first few subfolders hold only ``<Folder>_NNNN.jpg`` files."""
    checked = 0
    for person in sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [p for p in person.iterdir() if _is_image(p)]
        if not files or any(_LFW_NAME.fullmatch(p.stem) is None or not p.stem.startswith(person.name + "_")
                            for p in files):
            return False
        checked += 1
        if checked == 5:
            break
    return checked > 0


def _looks_like_utkface(root: Path) -> bool:
    labels = root / "labels.csv"
    if labels.is_file():
        with open(labels, newline="", encoding="utf-8-sig") as f:
            header = {h.strip() for h in next(csv.reader(f), [])}
        if {"file", "age", "gender", "race"} <= header:
            return True
    images_dir = root / "images" if (root / "images").is_dir() else root
    names = [p.name for p in sorted(images_dir.iterdir())[:50] if _is_image(p)]
    return bool(names) and sum(_UTK_NAME.fullmatch(n) is not None for n in names) * 2 > len(names)


_READERS: dict[str, Callable[[Path], Dataset]] = {
    "manifest": read_manifest,
    "lfw": read_lfw,
    "utkface": read_utkface,
    "congress": read_congress,
    "folder": read_folder_tree,
}


def read_dataset(spec: str | Path, *, kind: DatasetKind | None = None) -> Dataset:
    """Read a dataset, recognising its layout unless ``kind`` names it.

    Recognised, in this order: a ``.csv`` file (``manifest``, see :func:`read_manifest`); a folder with
    ``members.csv`` (``congress``); ``images/`` + ``protocol/pairs.txt``, or subfolders of
    ``<Name>_NNNN.jpg`` files (``lfw``); a UTKFace ``labels.csv`` or mostly ``age_gender_race_date.jpg``
    names (``utkface``); anything else is one folder per subject (``folder``).
    """
    path = Path(spec).absolute()
    if kind is not None:
        if kind not in _READERS:
            raise InvalidArgumentError(f"unknown dataset kind {kind!r}; use one of {', '.join(_READERS)}")
        return _READERS[kind](path)
    if not path.exists():
        raise DatasetError("does not exist", path=path)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_manifest(path)
        raise DatasetError("not a dataset: give a .csv manifest or a folder", path=path)
    if (path / "members.csv").is_file():
        return read_congress(path)
    images_dir, base = _lfw_dirs(path)
    if (base / "protocol" / "pairs.txt").is_file() or _looks_like_lfw(images_dir):
        return read_lfw(path)
    if _looks_like_utkface(path):
        return read_utkface(path)
    return read_folder_tree(path)


# -- embeddings -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, eq=False)
class EmbeddedDataset:
    """A dataset and the largest face of each of its images, as one engine saw them.

    ``embeddings``: (n, d) float32, L2-normalised; all zeros where no face was found. ``found``: (n,)
    bool, a face was found. ``acceptable``: (n,) bool, that face passes the engine's quality filter
    (``quality_filter``); faces that do not are kept, with their ``reasons`` (``RefusalReason`` values).
    ``det_scores``: (n,) float32 detector confidence in [0, 1] (0 without a face). ``errors``: row ->
    message for images that could not be read (they have ``found`` False too; an image that was read but
    has no face has no error).
    """

    dataset: Dataset
    embeddings: npt.NDArray[np.float32]
    found: npt.NDArray[np.bool_]
    acceptable: npt.NDArray[np.bool_]
    det_scores: npt.NDArray[np.float32]
    reasons: tuple[tuple[str, ...], ...]
    errors: dict[int, str]
    model_name: str
    model_sha256: str
    quality_filter: str

    def __post_init__(self) -> None:
        n = len(self.dataset)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise InvalidArgumentError(f"embeddings must be (n, d) with n = {n}, got {self.embeddings.shape}")
        for name in ("found", "acceptable", "det_scores"):
            if getattr(self, name).shape != (n,):
                raise InvalidArgumentError(f"{name} must have shape ({n},)")
        if len(self.reasons) != n:
            raise InvalidArgumentError(f"reasons must have {n} entries")

    def __len__(self) -> int:
        return len(self.dataset)

    def subset(self, selection: npt.ArrayLike) -> EmbeddedDataset:
        """The rows selected by a boolean mask (n,) or integer indices, like :meth:`Dataset.subset`."""
        idx = _selection(selection, len(self))
        new_row = {int(old): new for new, old in enumerate(idx)}
        return EmbeddedDataset(
            dataset=self.dataset.subset(idx), embeddings=self.embeddings[idx], found=self.found[idx],
            acceptable=self.acceptable[idx], det_scores=self.det_scores[idx],
            reasons=tuple(self.reasons[i] for i in idx),
            errors={new_row[i]: m for i, m in self.errors.items() if i in new_row},
            model_name=self.model_name, model_sha256=self.model_sha256, quality_filter=self.quality_filter)

    def usable(self, *, require_acceptable: bool = False) -> EmbeddedDataset:
        """The rows with a face (that also passes the quality filter, with ``require_acceptable``).

        Protocol pairs with a dropped image are dropped too: report how many (``len(dataset.pairs)``
        before and after), since leaving out hard images flatters error rates.
        """
        return self.subset(self.acceptable if require_acceptable else self.found)


def _file_keys(paths: Sequence[Path]) -> list[tuple[str, int, int] | None]:
    keys: list[tuple[str, int, int] | None] = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            keys.append(None)
        else:
            keys.append((str(p), st.st_size, st.st_mtime_ns))
    return keys


def _cache_settings(engine: Engine) -> dict[str, Any]:
    """What an embedding depends on besides the image: a cache made under other settings is stale."""
    c = engine.config
    return {"format_version": CACHE_FORMAT_VERSION, "model_sha256": engine.model_sha256,
            "quality_filter": str(c.quality_filter), "det_size": c.det_size, "det_upscale": c.det_upscale,
            "det_threshold": c.det_threshold, "nms_threshold": c.nms_threshold, "min_face_size": c.min_face_size,
            "max_pixels": c.max_pixels}


_Row = tuple[npt.NDArray[np.float32], bool, bool, float, tuple[str, ...], str]
"""One image's result: embedding, found, acceptable, detector score, refusal reasons, error ('' none)."""


def _load_cache(path: Path, settings: dict[str, Any], dim: int) -> dict[tuple[str, int, int], _Row]:
    """The rows of a cache file made under ``settings``; empty when it is absent, unreadable or stale."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["settings"])) != settings or z["embeddings"].shape[1:] != (dim,):
                log.info("ignoring embedding cache %s: made with another model or other settings", path)
                return {}
            paths, sizes, mtimes = z["paths"].tolist(), z["sizes"].tolist(), z["mtimes"].tolist()
            emb, found, ok, scores = z["embeddings"], z["found"], z["acceptable"], z["det_scores"]
            reasons, errors = z["reasons"].tolist(), z["errors"].tolist()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable embedding cache %s: %s", path, exc)
        return {}
    return {(p, s, m): (emb[i], bool(found[i]), bool(ok[i]), float(scores[i]),
                        tuple(r for r in reasons[i].split(",") if r), errors[i])
            for i, (p, s, m) in enumerate(zip(paths, sizes, mtimes, strict=True))}


def _save_cache(path: Path, settings: dict[str, Any], rows: dict[tuple[str, int, int], _Row], dim: int) -> None:
    keys = list(rows)
    values = [rows[k] for k in keys]
    arrays: dict[str, Any] = {
        "settings": np.array(json.dumps(settings, sort_keys=True)),
        "paths": _str_array(k[0] for k in keys),
        "sizes": np.asarray([k[1] for k in keys], dtype=np.int64),
        "mtimes": np.asarray([k[2] for k in keys], dtype=np.int64),
        "embeddings": np.stack([v[0] for v in values]) if values else np.zeros((0, dim), np.float32),
        "found": np.asarray([v[1] for v in values], dtype=np.bool_),
        "acceptable": np.asarray([v[2] for v in values], dtype=np.bool_),
        "det_scores": np.asarray([v[3] for v in values], dtype=np.float32),
        "reasons": _str_array(",".join(v[4]) for v in values),
        "errors": _str_array(v[5] for v in values),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)


def _embed_one(engine: Engine, path: Path, dim: int) -> _Row:
    zeros = np.zeros(dim, dtype=np.float32)
    try:
        faces = engine.analyze(path, max_faces=1)
    except (ImageDecodeError, InvalidArgumentError) as exc:
        return zeros, False, False, 0.0, (), str(exc)
    except FacelensError:
        raise  # a closed engine or a failing model: not this image's fault
    except Exception as exc:  # one odd image must not end a run of thousands
        log.warning("could not embed %s: %s", path, exc)
        return zeros, False, False, 0.0, (), f"{path}: {type(exc).__name__}: {exc}"
    if not faces or faces[0].embedding is None:
        return zeros, False, False, 0.0, (), ""
    face = faces[0]
    emb = np.asarray(face.embedding, dtype=np.float32)
    return emb, True, face.acceptable, float(face.score), tuple(str(r) for r in face.refusal_reasons), ""


def embed_dataset(
    engine: Engine,
    dataset: Dataset,
    *,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    cache: Path | None = None,
) -> EmbeddedDataset:
    """Embed the largest face of every image of ``dataset`` with ``engine``.

    Images run ``workers`` at a time in threads; open the engine with ``threads=1`` when ``workers`` > 1
    so that the cores are not oversubscribed. An image that cannot be read, or has no face, gets
    ``found`` False and a zero embedding (the reading error is kept in ``errors``); the run goes on.
    ``progress(done, total)`` is called once at the start and after each image.

    ``cache``: an ``.npz`` file of earlier results. An image is taken from it when its path, size and
    modification time are unchanged and the cache was made by the same model (sha256) under the same
    detector and quality settings; anything else in it is ignored, not an error. The file is rewritten
    with this run's results added (results for images not in ``dataset`` are kept).
    """
    if workers < 1:
        raise InvalidArgumentError(f"workers must be >= 1, got {workers}")
    dim = engine.embedding_size
    settings = _cache_settings(engine)
    keys = _file_keys(dataset.paths)
    cached = _load_cache(cache, settings, dim) if cache is not None else {}
    rows: list[_Row | None] = [cached.get(k) if k is not None else None for k in keys]
    todo = [i for i, r in enumerate(rows) if r is None]
    total = len(dataset)
    done = total - len(todo)
    if progress is not None:
        progress(done, total)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, row in zip(todo, pool.map(lambda i: _embed_one(engine, dataset.paths[i], dim), todo), strict=True):
            rows[i] = row
            done += 1
            if progress is not None:
                progress(done, total)
    results: list[_Row] = [r for r in rows if r is not None]
    if cache is not None and todo:
        current = {str(p) for p in dataset.paths}
        merged = {k: r for k, r in cached.items() if k[0] not in current}  # drop stale versions of our files
        merged.update({k: r for k, r in zip(keys, results, strict=True) if k is not None})
        _save_cache(cache, settings, merged, dim)
    return EmbeddedDataset(
        dataset=dataset,
        embeddings=np.stack([r[0] for r in results]) if results else np.zeros((0, dim), np.float32),
        found=np.asarray([r[1] for r in results], dtype=np.bool_),
        acceptable=np.asarray([r[2] for r in results], dtype=np.bool_),
        det_scores=np.asarray([r[3] for r in results], dtype=np.float32),
        reasons=tuple(r[4] for r in results),
        errors={i: r[5] for i, r in enumerate(results) if r[5]},
        model_name=engine.model_name,
        model_sha256=engine.model_sha256,
        quality_filter=str(engine.config.quality_filter),
    )
