"""Audit datasets: reading each on-disk layout, refusing malformed ones, embedding and caching."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import facelens
from facelens import FacelensError, InvalidArgumentError
from facelens.audit.dataset import (
    Dataset,
    DatasetError,
    EmbeddedDataset,
    Pairs,
    age_band,
    embed_dataset,
    read_congress,
    read_dataset,
    read_folder_tree,
    read_lfw,
    read_manifest,
    read_utkface,
)
from facelens.types import BBox, Face, Pose, Quality

from .conftest import PEOPLE, portrait


def _image(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 120, 120)).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- manifest -------------------------------------------------------------------------------------

def test_read_manifest_reads_paths_subjects_and_group_columns(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a1.jpg")
    _image(tmp_path / "img" / "a2.jpg")
    elsewhere = _image(tmp_path / "other" / "b1.png")
    csv_path = _write(tmp_path / "audit" / "faces.csv",
                      "path,subject,sex,age_band\n"
                      "../img/a1.jpg,alice,F,30-44\n"
                      "\n"
                      f"{elsewhere},bob,M,\n"
                      "../img/a2.jpg, alice ,F,30-44\n")
    ds = read_manifest(csv_path)
    assert ds.name == "faces" and len(ds) == 3
    assert ds.paths == ((tmp_path / "img" / "a1.jpg"), elsewhere, (tmp_path / "img" / "a2.jpg"))
    assert ds.subjects.tolist() == ["alice", "bob", "alice"]
    assert list(ds.groups) == ["sex", "age_band"]
    assert ds.groups["age_band"].tolist() == ["30-44", "", "30-44"]  # '' = unknown
    assert ds.pairs is None
    assert "3 images of 2 subjects" in ds.description and "annotations made by others" in ds.description


@pytest.mark.parametrize(("text", "message"), [
    ("", r"faces\.csv: empty file"),
    ("path,subject\n", r"faces\.csv: no images listed"),
    ("path,sex\nx.jpg,F\n", r"faces\.csv:1: missing column\(s\) subject"),
    ("path,subject,sex,sex\n", r"faces\.csv:1: column\(s\) sex appear more than once"),
    ("path,subject\nmissing.jpg,alice\n", r"faces\.csv:2: image missing\.jpg does not exist"),
    ("path,subject\nok.jpg,\n", r"faces\.csv:2: empty subject"),
    ("path,subject\n,alice\n", r"faces\.csv:2: empty path"),
    ("path,subject\nok.jpg,alice\nok.jpg,bob\n", r"faces\.csv:3: image ok\.jpg is listed twice \(first on line 2\)"),
    ("path,subject,sex\nok.jpg,alice\n", r"faces\.csv:2: expected 3 fields, got 2"),
    ("path,subject\nok.jpg,alice,F\n", r"faces\.csv:2: expected 2 fields, got 3"),
])
def test_read_manifest_names_the_file_and_line_of_each_problem(tmp_path: Path, text: str, message: str) -> None:
    _image(tmp_path / "ok.jpg")
    with pytest.raises(DatasetError, match=message) as info:
        read_manifest(_write(tmp_path / "faces.csv", text))
    assert isinstance(info.value, InvalidArgumentError) and isinstance(info.value, FacelensError)
    assert info.value.path == str(tmp_path / "faces.csv")


def test_read_manifest_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.csv: file does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_read_manifest_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    _image(tmp_path / "ok.jpg")
    (tmp_path / "latin1.csv").write_bytes("path,subject\nok.jpg,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.csv: not a UTF-8 text file"):
        read_manifest(tmp_path / "latin1.csv")


# -- LFW ------------------------------------------------------------------------------------------

def _lfw(root: Path, pairs: str | None = "1 2\nAnn_Lee\t1\t2\nBob_Ray\t1\t2\nAnn_Lee\t1\tBob_Ray\t2\n"
         "Bob_Ray\t1\tCy_Doe\t1\n") -> Path:
    for name, count in (("Ann_Lee", 2), ("Bob_Ray", 2), ("Cy_Doe", 1)):
        for k in range(1, count + 1):
            _image(root / "images" / name / f"{name}_{k:04d}.jpg")
    if pairs is not None:
        _write(root / "protocol" / "pairs.txt", pairs)
    return root


def test_read_lfw_reads_identities_pairs_and_labels(tmp_path: Path) -> None:
    root = _lfw(tmp_path / "lfw")
    _write(root / "labels" / "lfw_images.csv",
           "image,identity,imagenum,sex_afifi,race_mica\n"
           "Ann_Lee/Ann_Lee_0001.jpg,Ann_Lee,1,F,eastasian\n"
           "Ann_Lee/Ann_Lee_0002.jpg,Ann_Lee,2,F,eastasian\n"
           'Bob_Ray/Bob_Ray_0001.jpg,Bob_Ray,1,M,"african,caucasian"\n'
           'Bob_Ray/Bob_Ray_0002.jpg,Bob_Ray,2,M,"african,caucasian"\n'
           "Cy_Doe/Cy_Doe_0001.jpg,Cy_Doe,1,ambiguous,\n")
    ds = read_lfw(root)
    assert len(ds) == 5 and ds.subjects.tolist() == ["Ann_Lee", "Ann_Lee", "Bob_Ray", "Bob_Ray", "Cy_Doe"]
    assert ds.groups["sex"].tolist() == ["F", "F", "M", "M", ""]
    assert ds.groups["race"].tolist() == ["eastasian", "eastasian", "multiple", "multiple", ""]
    assert ds.pairs is not None
    assert ds.pairs.a.tolist() == [0, 2, 0, 2] and ds.pairs.b.tolist() == [1, 3, 3, 4]
    assert ds.pairs.same.tolist() == [True, True, False, False] and ds.pairs.fold.tolist() == [0, 0, 0, 0]
    assert ds.summary()["pairs"] == {"same": 2, "different": 2, "folds": 1}


def test_read_lfw_accepts_the_images_folder_and_missing_extras(tmp_path: Path) -> None:
    root = _lfw(tmp_path / "lfw")
    via_images = read_lfw(root / "images")
    assert len(via_images) == 5 and via_images.pairs is not None and len(via_images.pairs) == 4
    shutil.rmtree(root / "protocol")
    bare = read_lfw(root)
    assert bare.pairs is None and bare.groups == {} and "No pairs protocol" in bare.description


def test_read_lfw_splits_pairs_into_folds(tmp_path: Path) -> None:
    pairs = "2 1\nAnn_Lee 1 2\nAnn_Lee 1 Cy_Doe 1\nBob_Ray 1 2\nBob_Ray 2 Cy_Doe 1\n"
    ds = read_lfw(_lfw(tmp_path / "lfw", pairs))
    assert ds.pairs is not None and ds.pairs.fold.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(("pairs", "message"), [
    ("", r"pairs\.txt: empty pairs file"),
    ("ten 300\n", r"pairs\.txt:1: expected '<folds> <pairs per fold and kind>'"),
    ("1 2\nAnn_Lee 1 2\n", r"pairs\.txt: expected 4 pair lines \(1 folds x 2 same \+ 2 different\), found 1"),
    ("1 1\nAnn_Lee 1 2\nAnn_Lee 1 Bob_Ray\n", r"pairs\.txt:3: expected 'name n1 n2' or 'name1 n1 name2 n2'"),
    ("1 1\nAnn_Lee 1 x\nAnn_Lee 1 Bob_Ray 1\n", r"pairs\.txt:2: expected 'name n1 n2'"),
    ("1 1\nAnn_Lee 1 3\nAnn_Lee 1 Bob_Ray 1\n", r"pairs\.txt:2: image Ann_Lee_0003 is not in the dataset"),
])
def test_read_lfw_names_the_bad_pairs_line(tmp_path: Path, pairs: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_lfw(_lfw(tmp_path / "lfw", pairs))


def test_read_lfw_refuses_an_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "lfw" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"images: no images found"):
        read_lfw(tmp_path / "lfw")
    with pytest.raises(DatasetError, match=r"absent: folder does not exist"):
        read_lfw(tmp_path / "absent")


# -- folder tree ----------------------------------------------------------------------------------

def test_read_folder_tree_takes_top_folders_as_subjects(tmp_path: Path) -> None:
    _image(tmp_path / "alice" / "1.JPG")
    _image(tmp_path / "alice" / "2019" / "2.png")
    _image(tmp_path / "bob" / "x.jpeg")
    _image(tmp_path / "loose.jpg")  # no subject: skipped
    _image(tmp_path / "bob" / ".hidden.jpg")
    _image(tmp_path / ".trash" / "old.jpg")
    _write(tmp_path / "bob" / "notes.txt", "not an image")
    ds = read_folder_tree(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.paths] == ["alice/1.JPG", "alice/2019/2.png", "bob/x.jpeg"]
    assert ds.subjects.tolist() == ["alice", "alice", "bob"] and ds.groups == {}
    assert "1 images directly in the folder (no subject) were skipped" in ds.description


def test_read_folder_tree_refuses_a_folder_without_subject_images(tmp_path: Path) -> None:
    _image(tmp_path / "loose.jpg")
    (tmp_path / "empty_person").mkdir()
    with pytest.raises(DatasetError, match="no images found in subject folders"):
        read_folder_tree(tmp_path)


# -- UTKFace --------------------------------------------------------------------------------------

def test_read_utkface_parses_file_names_and_skips_odd_ones(tmp_path: Path) -> None:
    for name in ("25_0_2_20170116174525125.jpg.chip.jpg", "71_1_4_20170117.jpg", "3_1_1_2017.jpg",
                 "39_1_20170116174525125.jpg.chip.jpg", "40_2_0_2017.jpg", "50_0_7_2017.jpg"):
        _image(tmp_path / "images" / name)
    ds = read_utkface(tmp_path)
    assert [p.name for p in ds.paths] == ["25_0_2_20170116174525125.jpg.chip.jpg", "3_1_1_2017.jpg",
                                          "71_1_4_20170117.jpg"]
    assert ds.subjects.tolist() == [p.name for p in ds.paths]  # no identities: each image is its own subject
    assert ds.groups["sex"].tolist() == ["M", "F", "F"]
    assert ds.groups["race"].tolist() == ["Asian", "Black", "Others"]
    assert ds.groups["age_band"].tolist() == ["18-29", "0-17", "60+"]
    assert "3 images whose names are not age_gender_race_date.jpg were skipped" in ds.description


def test_read_utkface_prefers_labels_csv(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / "b.jpg")
    _write(tmp_path / "labels.csv", "file,age,gender,race_code,race,datetime,parse_ok\n"
                                    "a.jpg,45,F,3,Indian,2017,1\n"
                                    "b.jpg,,M,0,White,2017,0\n")
    ds = read_utkface(tmp_path)
    assert [p.name for p in ds.paths] == ["a.jpg"]
    assert (ds.groups["sex"][0], ds.groups["race"][0], ds.groups["age_band"][0]) == ("F", "Indian", "45-59")
    assert "1 rows with parse_ok != 1 were skipped" in ds.description
    _write(tmp_path / "labels.csv", "file,age,gender,race\na.jpg,45,F,Indian\ngone.jpg,20,M,White\n")
    with pytest.raises(DatasetError, match=r"labels\.csv:3: image 'gone\.jpg' does not exist"):
        read_utkface(tmp_path)
    _write(tmp_path / "labels.csv", "file,age,race\n")
    with pytest.raises(DatasetError, match=r"labels\.csv:1: missing column\(s\) gender"):
        read_utkface(tmp_path)


def test_read_utkface_refuses_a_folder_of_unparseable_names(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "holiday.jpg")
    with pytest.raises(DatasetError, match="no UTKFace images found .* 1 images whose names"):
        read_utkface(tmp_path)


# -- congress -------------------------------------------------------------------------------------

def _congress(root: Path, people: list[str], *, missing_b: bool = False) -> Path:
    lines = ["bioguide,name,chamber,state,party_code,born,photo_a,photo_b"]
    for k, person in enumerate(people):
        for which in "ab":
            (root / "images").mkdir(parents=True, exist_ok=True)
            shutil.copy(portrait(person, which), root / "images" / f"{person}_{which}.jpg")
        b = "" if missing_b and k == 0 else f"images/{person}_b.jpg"
        lines.append(f'{person},"NAME, {k}",House,XX,{(100, 200, 328)[k % 3]},{1950 + 10 * k},'
                     f"images/{person}_a.jpg,{b}")
    _write(root / "members.csv", "\n".join(lines) + "\n")
    return root


def test_read_congress_pairs_photos_by_member(tmp_path: Path) -> None:
    ds = read_congress(_congress(tmp_path, PEOPLE[:3], missing_b=True))
    assert len(ds) == 5
    assert ds.subjects.tolist() == [PEOPLE[0], PEOPLE[1], PEOPLE[1], PEOPLE[2], PEOPLE[2]]
    assert ds.attributes["photo"].tolist() == ["a", "a", "b", "a", "b"]
    assert ds.attributes["name"][0] == "NAME, 0"
    assert ds.groups["party"].tolist() == ["Democrat", "Republican", "Republican", "other", "other"]
    assert ds.groups["age_band"].tolist() == ["60+", "45-59", "45-59", "30-44", "30-44"]  # age in 2014
    assert "age in 2014" in ds.description


def test_read_congress_names_the_line_of_a_missing_photo(tmp_path: Path) -> None:
    root = _congress(tmp_path, PEOPLE[:2])
    (root / "images" / f"{PEOPLE[1]}_b.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"members\.csv:3: image images/{PEOPLE[1]}_b\.jpg does not exist"):
        read_congress(root)
    (root / "members.csv").write_text("bioguide,name,born\n")
    with pytest.raises(DatasetError, match=r"members\.csv:1: missing column\(s\) chamber, party_code, photo_a"):
        read_congress(root)


# -- detection ------------------------------------------------------------------------------------

def test_read_dataset_recognises_each_layout(tmp_path: Path) -> None:
    _image(tmp_path / "tree" / "alice" / "1.jpg")
    _image(tmp_path / "utk" / "images" / "20_1_3_2017.jpg.chip.jpg")
    _image(tmp_path / "utk_flat" / "20_1_3_2017.jpg")
    _image(tmp_path / "m.jpg")
    manifest = _write(tmp_path / "m.csv", "path,subject\nm.jpg,x\n")
    lfw = _lfw(tmp_path / "lfw", pairs=None)
    congress = _congress(tmp_path / "congress", PEOPLE[:1])
    assert read_dataset(manifest).name == "m"
    assert read_dataset(lfw).name == "lfw" and read_dataset(lfw / "images").name == "lfw"
    assert read_dataset(tmp_path / "utk").name == "utkface"
    assert read_dataset(tmp_path / "utk_flat").name == "utkface"
    assert read_dataset(congress).name == "congress-past"
    assert read_dataset(tmp_path / "tree").subjects.tolist() == ["alice"]
    assert read_dataset(tmp_path / "utk", kind="folder").subjects.tolist() == ["images"]
    with pytest.raises(InvalidArgumentError, match="unknown dataset kind 'imdb'"):
        read_dataset(tmp_path, kind="imdb")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="nowhere: does not exist"):
        read_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"m\.jpg: not a dataset"):
        read_dataset(tmp_path / "m.jpg")


# -- the Dataset value ----------------------------------------------------------------------------

def _toy(tmp_path: Path) -> Dataset:
    paths = tuple(tmp_path / f"{k}.jpg" for k in range(4))
    pairs = Pairs(a=np.array([0, 0, 1]), b=np.array([1, 2, 3]), same=np.array([True, False, False]),
                  fold=np.array([0, 0, 1]))
    return Dataset(name="toy", root=tmp_path, paths=paths, subjects=np.array(["x", "x", "y", "z"]),
                   groups={"sex": np.array(["F", "F", "", "M"])}, pairs=pairs, description="Toy.")


def test_dataset_subset_keeps_pairs_whose_images_survive(tmp_path: Path) -> None:
    ds = _toy(tmp_path)
    sub = ds.subset(np.array([True, True, False, True]))
    assert sub.subjects.tolist() == ["x", "x", "z"] and sub.groups["sex"].tolist() == ["F", "F", "M"]
    assert sub.pairs is not None and sub.pairs.a.tolist() == [0, 1] and sub.pairs.b.tolist() == [1, 2]
    assert sub.pairs.same.tolist() == [True, False] and "Subset: 3 of these 4 images" in sub.description
    reordered = ds.subset([3, 1])
    assert reordered.paths == (ds.paths[3], ds.paths[1]) and reordered.pairs is not None
    assert reordered.pairs.a.tolist() == [1] and reordered.pairs.b.tolist() == [0]
    assert len(ds.subset([])) == 0
    for bad in ([4], [1, 1], np.array([True, False])):
        with pytest.raises(InvalidArgumentError):
            ds.subset(bad)


def test_dataset_summary_is_json_ready(tmp_path: Path) -> None:
    summary = json.loads(json.dumps(_toy(tmp_path).summary()))
    assert summary["images"] == 4 and summary["subjects"] == 3 and summary["subjects_with_2plus_images"] == 1
    assert summary["groups"] == {"sex": {"F": 2, "": 1, "M": 1}}
    assert summary["pairs"] == {"same": 1, "different": 2, "folds": 2}


def test_dataset_refuses_inconsistent_columns(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="subjects must have shape"):
        Dataset(name="x", root=tmp_path, paths=(tmp_path / "a.jpg",), subjects=np.array(["a", "b"]), groups={})
    with pytest.raises(InvalidArgumentError, match="group column 'sex'"):
        Dataset(name="x", root=tmp_path, paths=(tmp_path / "a.jpg",), subjects=np.array(["a"]),
                groups={"sex": np.array([])})
    with pytest.raises(InvalidArgumentError, match="absolute"):
        Dataset(name="x", root=tmp_path, paths=(Path("a.jpg"),), subjects=np.array(["a"]), groups={})


def test_age_band_bounds() -> None:
    assert [age_band(a) for a in (0, 17, 18, 29, 30, 44, 45, 59, 60, 116)] == [
        "0-17", "0-17", "18-29", "18-29", "30-44", "30-44", "45-59", "45-59", "60+", "60+"]
    assert age_band(None) == "" and age_band(-1) == ""


# -- embedding ------------------------------------------------------------------------------------

def test_embed_dataset_with_a_real_engine(tmp_path: Path, engine: facelens.Engine) -> None:
    root = _congress(tmp_path / "congress", PEOPLE[:3])
    base = read_congress(root)
    broken = _write(tmp_path / "broken.jpg", "not an image")
    blank = _image(tmp_path / "blank.png", (160, 160))
    ds = Dataset(name="t", root=tmp_path, paths=(*base.paths, broken, blank),
                 subjects=np.array([*base.subjects.tolist(), "broken", "blank"]), groups={})
    calls: list[tuple[int, int]] = []
    emb = embed_dataset(engine, ds, workers=2, progress=lambda done, total: calls.append((done, total)))
    n = len(ds)
    assert emb.embeddings.shape == (n, engine.embedding_size) and emb.embeddings.dtype == np.float32
    assert emb.found.tolist() == [True] * 6 + [False, False]
    assert list(emb.errors) == [6] and "broken.jpg" in emb.errors[6]
    assert not emb.embeddings[6:].any() and emb.det_scores[6] == 0.0
    np.testing.assert_allclose(np.linalg.norm(emb.embeddings[:6], axis=1), 1.0, atol=1e-4)
    assert all(a == (not r) for a, r in zip(emb.acceptable[:6], emb.reasons[:6], strict=True))
    assert np.all(emb.det_scores[:6] > 0.5)
    assert calls[0] == (0, n) and calls[-1] == (n, n) and len(calls) == n + 1
    scores = emb.embeddings[:6] @ emb.embeddings[:6].T
    same = base.subjects[:, None] == base.subjects[None, :]
    off_diagonal = ~np.eye(6, dtype=bool)
    assert scores[same & off_diagonal].min() > scores[~same].max() + 0.1
    usable = emb.usable()
    assert len(usable) == 6 and usable.errors == {} and usable.dataset.paths == base.paths
    assert emb.model_sha256 == engine.model_sha256
    assert len(emb.usable(require_acceptable=True)) == int(emb.acceptable.sum())


@dataclass
class _FakeEngine:
    """Stands in for an Engine: one 4-d embedding per image, derived from the file name."""

    model_sha256: str = "ab" * 32
    model_name: str = "fake"
    embedding_size: int = 4
    config: facelens.EngineConfig = field(default_factory=facelens.EngineConfig)
    seen: list[str] = field(default_factory=list)

    def analyze(self, image: Path, **_: Any) -> list[Face]:
        self.seen.append(image.name)
        if image.name.startswith("noface"):
            return []
        vec = np.zeros(4, np.float32)
        vec[len(image.stem) % 4] = 1.0
        return [Face(bbox=BBox(0, 0, 10, 10), score=0.9, landmarks=(), pose=Pose(0.0, 0.0, 0.0),
                     quality=Quality(sharpness=1.0, brightness=1.0, face_size=10.0), embedding=vec)]


def _fake_run(engine: _FakeEngine, ds: Dataset, cache: Path) -> EmbeddedDataset:
    return embed_dataset(engine, ds, workers=1, cache=cache)  # type: ignore[arg-type]


def test_embed_dataset_cache_reuses_unchanged_images_only(tmp_path: Path) -> None:
    paths = (_image(tmp_path / "a.jpg"), _image(tmp_path / "bb.jpg"), _image(tmp_path / "noface.jpg"))
    ds = Dataset(name="t", root=tmp_path, paths=paths, subjects=np.array(["a", "b", "c"]), groups={})
    cache = tmp_path / "cache" / "emb.npz"
    first = _fake_run(_FakeEngine(), ds, cache)
    assert cache.is_file() and first.found.tolist() == [True, True, False]

    again = _FakeEngine()
    second = _fake_run(again, ds, cache)
    assert again.seen == []  # everything from the cache
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    assert second.found.tolist() == [True, True, False] and second.reasons == first.reasons

    _image(tmp_path / "bb.jpg", (9, 9))  # changed file: embedded again, others reused
    changed = _FakeEngine()
    _fake_run(changed, ds, cache)
    assert changed.seen == ["bb.jpg"]

    other_model = _FakeEngine(model_sha256="cd" * 32)  # stale cache: ignored, not an error
    _fake_run(other_model, ds, cache)
    assert sorted(other_model.seen) == ["a.jpg", "bb.jpg", "noface.jpg"]

    cache.write_bytes(b"garbage")
    garbage = _FakeEngine(model_sha256="cd" * 32)
    _fake_run(garbage, ds, cache)
    assert len(garbage.seen) == 3


def test_embed_dataset_reuses_the_cache_for_a_subset(tmp_path: Path) -> None:
    paths = (_image(tmp_path / "a.jpg"), _image(tmp_path / "bb.jpg"))
    ds = Dataset(name="t", root=tmp_path, paths=paths, subjects=np.array(["a", "b"]), groups={})
    cache = tmp_path / "emb.npz"
    _fake_run(_FakeEngine(), ds.subset([1]), cache)
    full = _FakeEngine()
    _fake_run(full, ds, cache)
    assert full.seen == ["a.jpg"]
    subset_again = _FakeEngine()
    _fake_run(subset_again, ds.subset([0]), cache)  # the full run's rows were kept
    assert subset_again.seen == []


def test_embed_dataset_refuses_zero_workers(tmp_path: Path) -> None:
    ds = Dataset(name="t", root=tmp_path, paths=(tmp_path / "a.jpg",), subjects=np.array(["a"]), groups={})
    with pytest.raises(InvalidArgumentError, match="workers must be >= 1"):
        embed_dataset(_FakeEngine(), ds, workers=0)  # type: ignore[arg-type]


def test_read_congress_historical_one_portrait_per_member(tmp_path: Path) -> None:
    root = tmp_path / "historical"
    (root / "images").mkdir(parents=True)
    lines = ["bioguide,name,born,chamber,state,photo"]
    for k, (person, born) in enumerate(zip(PEOPLE[:3], (1801, 1870, 1931), strict=True)):
        shutil.copy(portrait(person), root / "images" / f"{person}.jpg")
        lines.append(f'{person},"NAME, First ({k})",{born},Senate,XX,images/{person}.jpg')
    lines.append('X000001,"EMPTY, Photo",1900,House,XX,')  # no portrait: skipped
    _write(root / "members.csv", "\n".join(lines) + "\n")
    ds = read_dataset(root)
    assert ds.name == "congress-historical" and len(ds) == 3
    assert list(ds.subjects) == PEOPLE[:3] and len(set(ds.subjects.tolist())) == 3  # every image a different person
    assert list(ds.groups["era"]) == ["born<1850", "born1850-1899", "born1900+"]
    assert ds.attributes["name"][0] == "NAME, First (0)"
    (root / "images" / f"{PEOPLE[0]}.jpg").unlink()
    with pytest.raises(FacelensError, match="does not exist"):
        read_dataset(root)
