"""Defects found by using facelens as a careless or hostile user would: each one-line error, exit code and refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import facelens
from facelens.cli import main
from facelens.quality import LIMITS, refusal_reasons
from facelens.types import QualityFilter, RefusalReason

from .conftest import PORTRAITS, portrait

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _one_line_error(err: str) -> None:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(not ln.startswith(" ") for ln in lines), err


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A collection 'c' holding the two photos of C001079."""
    h = str(tmp_path_factory.mktemp("home"))
    assert _run("collection", "create", "c", "--home", h)[0] == 0
    code, _, err = _run("index", "c", str(portrait("C001079")), str(portrait("C001082")), "--home", h)
    assert code == 0, err
    return h


def _face_ids(home: str) -> list[str]:
    return [f["face_id"] for f in json.loads(_run("faces", "list", "c", "--home", home, "--json")[1])["faces"]]


# -- faces delete of unknown ids: exit 3 naming them ------------------------------------------------------


def test_faces_delete_only_unknown_ids_exits_3(home: str) -> None:
    before = _face_ids(home)
    code, out, err = _run("faces", "delete", "c", "nope", "--home", home)
    assert code == 3
    assert "deleted 0 face(s)" in out and "no face 'nope' in collection 'c'" in err
    _one_line_error(err)
    assert _face_ids(home) == before


def test_faces_delete_some_unknown_deletes_the_others_and_exits_3(tmp_path: Path) -> None:
    h = str(tmp_path)
    _run("collection", "create", "c", "--home", h)
    _run("index", "c", str(portrait("C001079")), str(portrait("C001082")), "--home", h)
    victim, keep = _face_ids(h)
    code, out, err = _run("faces", "delete", "c", victim, "ghost1", "ghost2", "--home", h, "--json")
    assert code == 3
    doc = json.loads(out)
    assert doc.pop("receipt")["face_ids"] == [victim] and doc == {"deleted": [victim], "unknown": ["ghost1", "ghost2"]}
    assert "no faces 'ghost1', 'ghost2' in collection 'c'" in err
    assert _face_ids(h) == [keep]
    assert _run("faces", "delete", "c", keep, "--home", h)[0] == 0


def test_person_associate_unknown_face_exits_3(home: str) -> None:
    assert _run("person", "create", "c", "someone", "--home", home)[0] == 0
    known = _face_ids(home)[0]
    code, out, err = _run("person", "associate", "c", "someone", known, "ghost", "--home", home, "--json")
    assert code == 3 and json.loads(out) == {"associated": [known], "unknown": ["ghost"]}
    assert "no face 'ghost'" in err


# -- numbers out of range: one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("faces", "list", "c", "--next-token", "99999999999999999999999"),
    ("faces", "list", "c", "--next-token", "abc"),
    ("faces", "list", "c", "--limit", "0"),
    ("faces", "list", "c", "--limit", "-1"),
    ("faces", "list", "c", "--limit", "99999999999999999999999"),
    ("faces", "list", "c", "--limit", "9223372036854775807"),
    ("search", "c", str(portrait("C001079", "b")), "--max-results", "0"),
    ("search", "c", str(portrait("C001079", "b")), "--max-fmr", "0"),
    ("search", "c", str(portrait("C001079", "b")), "--max-fpir", "nan"),
    ("search", "c", str(portrait("C001079", "b")), "--min-score", "5"),
    ("person", "search", "c", str(portrait("C001079", "b")), "--max-results", "-3"),
])
def test_out_of_range_numbers_are_usage_errors(home: str, args: tuple[str, ...]) -> None:
    code, _, err = _run(*args, "--home", home)
    assert code == 2, err
    _one_line_error(err)


@pytest.mark.parametrize("option", [
    ("--threads", "99999999999999999999"), ("--threads", "-1"), ("--det-size", "3200000"), ("--det-size", "7"),
    ("--det-threshold", "nan"), ("--det-threshold", "2"), ("--min-face-size", "nan"), ("--min-face-size", "inf"),
    ("--max-pixels", "0"), ("--max-faces", "0"),
])
def test_detect_engine_options_out_of_range_are_usage_errors(option: tuple[str, str]) -> None:
    code, _, err = _run("detect", *option, str(portrait("C001079")))
    assert code == 2, err
    _one_line_error(err)


def test_compare_max_fmr_zero_is_a_usage_error() -> None:
    code, _, err = _run("compare", str(portrait("C001079")), str(portrait("C001079", "b")), "--max-fmr", "0")
    assert code == 2 and "max_fmr" in err
    _one_line_error(err)


def test_filesystem_errors_are_one_line_with_exit_3(tmp_path: Path) -> None:
    """A --home that is inside a file cannot hold collections: one line, exit 3 (input error)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = _run("collection", "create", "c", "--home", str(afile / "sub"))
    assert code == 3, err
    assert str(afile) in err
    _one_line_error(err)


def test_the_exit_code_table_maps_each_error_family() -> None:
    from facelens import cli
    from facelens.errors import (
        CollectionNotFoundError,
        ImageTooLargeError,
        InvalidArgumentError,
        ModelFileError,
        NoFaceError,
    )
    from facelens.server.errors import InsecureSettingsError

    assert cli._exit_code(InvalidArgumentError("x")) == 2
    assert cli._exit_code(InsecureSettingsError("x")) == 2
    assert cli._exit_code(ModelFileError("x", path="p")) == 4
    assert cli._exit_code(ImageTooLargeError(width=1, height=1, max_pixels=1)) == 3
    assert cli._exit_code(NoFaceError("x")) == 3
    assert cli._exit_code(CollectionNotFoundError("x")) == 3
    assert cli._exit_code(OverflowError("x")) == 2
    assert cli._exit_code(NotADirectoryError("x")) == 3


# -- images that are not regular files -----------------------------------------------------------------------


def test_detect_on_a_fifo_does_not_hang(tmp_path: Path) -> None:
    """A real process, as a user runs it: `mkfifo x.jpg; facelens detect x.jpg` used to block forever."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "facelens", "detect", str(fifo), str(portrait("C001079"))],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert f"{fifo}: is a FIFO (named pipe), not a regular image file" in proc.stderr
    assert ": 1 face" in proc.stdout  # the other image is still processed
    _one_line_error(proc.stderr)


def test_index_faces_of_a_fifo_from_python_does_not_hang(tmp_path: Path) -> None:
    """The engine hashes an image before decoding it (to find it already indexed): that read must refuse a
    FIFO too, from Python as from the CLI. In a subprocess, so that a regression fails instead of hanging."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    code = ("import sys, facelens.engine as e\n"
            "try:\n    e.image_sha256(sys.argv[1])\n"
            "except facelens.errors.ImageDecodeError as exc:\n    print('refused:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", "import facelens.errors\n" + code, str(fifo)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "refused:" in proc.stdout and "FIFO" in proc.stdout, proc.stderr


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", str(PORTRAITS)])
def test_detect_on_devices_and_folders_is_an_input_error(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    code, _, err = _run("detect", path)
    assert code == 3
    assert "not a regular image file" in err or "is a directory" in err
    _one_line_error(err)


def test_index_folder_skips_symlinks_and_non_regular_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Links inside the folder are not followed, even to images: outside the folder, or loops."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(portrait("C001082").read_bytes())
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "mine.jpg").write_bytes(portrait("C001079").read_bytes())
    (folder / "link-to-file.jpg").symlink_to(outside / "secret.jpg")
    (folder / "link-to-dir").symlink_to(outside)
    (folder / "loop").symlink_to(folder)
    os.mkfifo(folder / "pipe.jpg")
    home = str(tmp_path / "h")
    _run("collection", "create", "c", "--home", home)
    code, out, err = _run("index", "c", str(folder), "--home", home, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [r["external_image_id"] for r in doc["images"]] == ["sub/mine.jpg"]
    assert "skipped 3 symbolic link(s)" in caplog.text
    # A link named on the command line is the user's choice: it is followed.
    code, out, _ = _run("index", "c", str(folder / "link-to-file.jpg"), "--home", home, "--json")
    assert code == 0 and json.loads(out)["summary"]["faces_indexed"] == 1


# -- the README's collection example runs as written on a fresh home ------------------------------------------


def test_readme_collection_example_runs_as_written(tmp_path: Path) -> None:
    """Each line of the README's collection block, run from the project root with an empty FACELENS_HOME."""
    import glob
    import shlex

    text = (ROOT / "README.md").read_text()
    block = text.split("# collections live in", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert len(block) >= 4
    outputs = []
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for line in block:
            words = shlex.split(line.split("#", 1)[0])
            assert words[0] == ".venv/bin/facelens", line
            args = [a for w in words[1:] for a in (sorted(glob.glob(w)) if "*" in w else [w])]
            result = CliRunner(env={"FACELENS_HOME": str(tmp_path)}).invoke(main, args)
            assert result.exit_code == 0, (line, result.output)
            outputs.append(result.stdout)
    finally:
        os.chdir(cwd)
    search = next(out for line, out in zip(block, outputs, strict=True) if " search " in line)
    best = search.splitlines()[1].split()
    assert best[1] == "C001079_a.jpg"  # found by the other photo of the same person...
    assert 0.5 < float(best[best.index("score") + 1]) < 0.99  # ...not by itself at 1.0


def test_demo_on_a_folder_without_portraits_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _run("demo", str(tmp_path))
    assert code == 2 and "at least two portraits" in err
    _one_line_error(err)


# -- a dog's face: the detector's second look tells it apart ----------------------------------------------------

DOGS = ROOT.parent / "shared" / "data" / "samples" / "dlib" / "faces" / "dogs.jpg"


def _second_look(engine: facelens.Engine, image: Path) -> tuple[facelens.Face, float]:
    from facelens.imageio import decode_image

    assert engine.backend is not None
    rgb = decode_image(image)
    face = engine.detect(rgb)[0]
    return face, engine.backend.detector.confirm_score(rgb, np.array(face.bbox.as_list(), dtype=np.float32))


@pytest.mark.skipif(not DOGS.exists(), reason="needs ../shared/data (dlib's dogs.jpg, not copied: licence unclear)")
def test_dogs_face_is_refused_by_the_second_look(engine: facelens.Engine) -> None:
    face, confirmed = _second_look(engine, DOGS)
    assert 0.6 < face.score < 0.65
    # the first look alone lets it through AUTO...
    assert refusal_reasons(face.score, face.pose, face.quality, QualityFilter.AUTO) == ()
    assert confirmed < 0.5
    reasons = refusal_reasons(face.score, face.pose, face.quality, QualityFilter.AUTO, confirmed_score=confirmed)
    assert RefusalReason.LOW_CONFIDENCE in reasons
    # ...and the engine takes the second look: the dog is refused, so never indexed
    assert face.refusal_reasons == (RefusalReason.LOW_CONFIDENCE,)
    assert engine.detect(DOGS, quality_filter="NONE")[0].refusal_reasons == ()  # NONE: no second look either


@pytest.mark.parametrize("image", sorted(PORTRAITS.glob("*.jpg"))[::3], ids=lambda p: p.name)
def test_real_faces_pass_the_second_look(engine: facelens.Engine, image: Path) -> None:
    face, confirmed = _second_look(engine, image)
    assert confirmed >= LIMITS[QualityFilter.HIGH].min_confirmed_score
    assert refusal_reasons(face.score, face.pose, face.quality, QualityFilter.AUTO, confirmed_score=confirmed) == ()
    assert face.acceptable  # as the engine judged it, second look included


def test_second_look_on_a_box_with_no_face_is_zero(engine: facelens.Engine) -> None:
    assert engine.backend is not None
    grey = np.full((300, 300, 3), 128, dtype=np.uint8)
    assert engine.backend.detector.confirm_score(grey, np.array([100, 100, 200, 200], dtype=np.float32)) == 0.0
    assert engine.backend.detector.confirm_score(grey, np.array([5, 5, 5.5, 5.5], dtype=np.float32)) == 0.0


def test_index_a_fifo_or_device_does_not_hang(tmp_path: Path) -> None:
    """`facelens index` hashes each file before decoding it: the check must come before that too."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    home = str(tmp_path / "h")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    facelens_cmd = [sys.executable, "-m", "facelens"]
    subprocess.run([*facelens_cmd, "collection", "create", "c", "--home", home], check=True, env=env, timeout=60)
    devices = [d for d in ("/dev/zero",) if os.path.exists(d)]
    proc = subprocess.run([*facelens_cmd, "index", "c", str(fifo), *devices, str(portrait("C001079")), "--home", home],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "is a FIFO (named pipe), not a regular image file" in proc.stderr
    assert "1 faces indexed from" in proc.stdout
    _one_line_error(proc.stderr)


def test_check_image_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    from facelens.errors import ImageDecodeError
    from facelens.imageio import check_image_file

    check_image_file(portrait("C001079"))
    for bad, words in ((tmp_path, "directory"), (tmp_path / "nope.jpg", "does not exist"), ("", "empty path")):
        with pytest.raises(ImageDecodeError, match=words):
            check_image_file(bad)


def test_index_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    """Linux file names are bytes; b'\\xff.jpg' becomes the external id '\\\\xff.jpg' instead of a traceback."""
    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(b"\xff.jpg")
    (folder / name).write_bytes(portrait("C001079").read_bytes())
    home = str(tmp_path / "h")
    _run("collection", "create", "c", "--home", home)
    for target in (str(folder), str(folder / name)):
        code, out, err = _run("index", "c", target, "--home", home, "--json")
        assert code == 0, err
        assert json.loads(out)["images"][0]["external_image_id"] == "\\xff.jpg"


@pytest.mark.parametrize("env", [
    {"FACELENS_THREADS": "99999999999999999999"}, {"FACELENS_DET_SIZE": "3200000"},
    {"FACELENS_MIN_FACE_SIZE": "nan"}, {"FACELENS_MIN_FACE_SIZE": "inf"}, {"FACELENS_DET_THRESHOLD": "nan"},
])
def test_environment_settings_out_of_range_are_usage_errors(env: dict[str, str]) -> None:
    """The same limits as the options, for values that come from the environment (config.py checks them)."""
    result = CliRunner(env=env).invoke(main, ["detect", str(portrait("C001079"))])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.stderr
    _one_line_error(result.stderr)


def test_index_with_an_invalid_person_id_is_one_usage_error(tmp_path: Path) -> None:
    code, out, err = _run("index", "nowhere", str(PORTRAITS), "--person", "bad/id", "--home", str(tmp_path))
    assert code == 2 and "invalid person id" in err and err.count("error") == 1, err
