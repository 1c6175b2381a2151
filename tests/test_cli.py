"""The facelens command: output, JSON keys, exit codes, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from facelens.cli import main

from .conftest import PORTRAITS, portrait


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_detect_prints_each_face() -> None:
    code, out, _ = _run("detect", str(portrait("B000444")), str(portrait("C000380", "b")))
    assert code == 0
    assert out.count(": 1 face") == 2 and "box" in out and "[ok]" in out


def test_cli_detect_json_has_the_documented_keys() -> None:
    code, out, _ = _run("detect", "--json", "--embeddings", str(portrait("B000444")))
    assert code == 0
    doc = json.loads(out)
    assert doc["model"] == "buffalo_s"
    face = doc["images"][0]["faces"][0]
    assert set(face) == {"bbox", "score", "landmarks", "pose", "quality", "quality_filter", "refusal_reasons",
                         "embedding"}
    assert len(face["embedding"]) == 512 and len(face["landmarks"]) == 5


def test_cli_detect_reports_unreadable_images_and_continues(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    code, out, err = _run("detect", "--json", str(bad), str(portrait("B000444")))
    assert code == 3
    doc = json.loads(out)
    assert doc["images"][0]["error"]["type"] == "ImageDecodeError"
    assert len(doc["images"][1]["faces"]) == 1
    assert "bad.jpg" in err and "Traceback" not in err


def test_cli_compare_same_person_matches_with_exit_0() -> None:
    code, out, _ = _run("compare", "--json", str(portrait("C001079")), str(portrait("C001079", "b")))
    assert code == 0
    doc = json.loads(out)
    assert {"score", "fmr", "match", "max_fmr", "threshold", "fmr_extrapolated", "extrapolated", "face_a", "face_b",
            "calibration", "image_a", "image_b", "model"} <= set(doc)
    assert doc["match"] is True and doc["max_fmr"] == 1e-5 and doc["fmr"] <= 1e-5
    assert doc["score"] >= doc["threshold"]


def test_cli_compare_different_people_exit_1_with_plain_words() -> None:
    code, out, _ = _run("compare", str(portrait("C001079")), str(portrait("D000601")))
    assert code == 1
    assert "NO MATCH" in out and "pairs of different people score this high" in out


def test_cli_compare_no_face_is_an_input_error(tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    code, _, err = _run("compare", str(blank), str(portrait("C001079")))
    assert code == 3
    assert "blank.png: no face found" in err


def test_cli_compare_missing_file_and_bad_rate() -> None:
    code, _, err = _run("compare", "nope.jpg", str(portrait("C001079")))
    assert code == 3 and "nope.jpg" in err and "does not exist" in err
    code, _, err = _run("compare", "--max-fmr", "2", str(portrait("C001079")), str(portrait("C001079", "b")))
    assert code == 2 and "max_fmr" in err


def test_cli_quiet_prints_nothing_but_keeps_the_exit_code() -> None:
    code, out, _ = _run("-q", "compare", str(portrait("C001079")), str(portrait("C001079", "b")))
    assert code == 0 and out == ""


def test_cli_demo_matches_every_same_person_pair() -> None:
    code, out, _ = _run("demo", "--json", str(PORTRAITS))
    assert code == 0
    doc = json.loads(out)
    counts = doc["counts"]
    assert counts["true_match"] == 8 and counts["false_non_match"] == 0 and counts["false_match"] == 0
    assert doc["search"]["correct"] == 8 and doc["search"]["collection_size"] == 8


def test_cli_models_lists_files_with_their_checksums() -> None:
    code, out, _ = _run("models", "--json")
    assert code == 0
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["w600k_mbf"]["status"] == "ok" and "non-commercial" in rows["w600k_mbf"]["licence"]


def test_cli_usage_error_exit_2_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "facelens", "compare", "only-one.jpg"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Missing argument" in proc.stderr


def _commands() -> list[str]:
    """Every command of the CLI, walked from the click tree, so that a new one cannot go undocumented."""
    import click

    from facelens.cli import main

    out = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in sorted(group.commands.items()):
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix}{name} ")
            else:
                out.append(f"{prefix}{name}")

    walk(main, "")
    return out


@pytest.mark.parametrize("command", _commands())
def test_cli_every_command_is_documented(command: str) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert f"## facelens {command}" in doc


def test_cli_collection_workflow(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    assert _run("collection", "create", "people", "--home", home)[0] == 0
    code, out, _ = _run("index", "people", str(PORTRAITS), "--home", home, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["faces_indexed"] == 16 and doc["summary"]["errors"] == 0
    assert {r["external_image_id"] for r in doc["images"]} == {p.name for p in PORTRAITS.glob("*.jpg")}
    code, out, _ = _run("index", "people", str(PORTRAITS), "--home", home, "--json")  # resumes: nothing new
    assert json.loads(out)["summary"] == {"images": 16, "faces_indexed": 0, "already_indexed": 16,
                                          "faces_refused": 0, "errors": 0}
    code, out, _ = _run("search", "people", str(portrait("C001079", "b")), "--home", home, "--json")
    assert code == 0
    doc = json.loads(out)
    assert {"matches", "threshold", "max_fmr", "max_fpir", "extrapolated", "collection_size", "searched_face",
            "collection"} <= set(doc)
    assert [m["external_image_id"] for m in doc["matches"]] == ["C001079_b.jpg", "C001079_a.jpg"]
    assert {"face_id", "external_image_id", "person_id", "score", "fmr"} <= set(doc["matches"][0])
    code, out, _ = _run("faces", "list", "people", "--limit", "5", "--home", home, "--json")
    page = json.loads(out)
    assert len(page["faces"]) == 5 and page["next_token"]
    victim = doc["matches"][1]["face_id"]
    code, out, err = _run("faces", "delete", "people", victim, "nope", "--home", home, "--json")
    deleted = json.loads(out)
    assert deleted.pop("receipt")["face_ids"] == [victim] and deleted == {"deleted": [victim], "unknown": ["nope"]}
    assert code == 3 and "no face 'nope' in collection 'people'" in err
    code, out, _ = _run("collection", "describe", "people", "--home", home, "--json")
    assert json.loads(out)["face_count"] == 15
    assert _run("collection", "check", "people", "--home", home)[0] == 0
    assert json.loads(_run("collection", "list", "--home", home, "--json")[1]) == {"collections": ["people"]}
    assert _run("collection", "delete", "people", "--home", home)[0] == 0


def test_cli_collection_errors_are_one_line(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    code, _, err = _run("search", "ghost", str(portrait("C001079")), "--home", home)
    assert code == 3 and "no collection named 'ghost'" in err
    code, _, err = _run("collection", "create", "../etc", "--home", home)
    assert code == 2 and "invalid collection name" in err
    _run("collection", "create", "c", "--home", home)
    code, _, err = _run("index", "c", str(portrait("C001079")), str(portrait("C001082")), "--external-id", "x",
                        "--home", home)
    assert code == 2 and "exactly one image" in err
    code, _, err = _run("search", "c", "--home", home)
    assert code == 2 and "IMAGE or --face-id" in err


def test_cli_person_commands(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    _run("collection", "create", "p", "--home", home)
    _run("index", "p", str(portrait("C001082")), "--person", "canseco", "--home", home)
    code, out, _ = _run("index", "p", str(portrait("C001082", "b")), "--home", home, "--json")
    face_id = json.loads(out)["images"][0]["indexed"][0]["face_id"]
    assert _run("person", "associate", "p", "canseco", face_id, "--home", home)[0] == 0
    code, out, _ = _run("person", "list", "p", "--home", home, "--json")
    assert json.loads(out) == {"persons": [{"person_id": "canseco", "faces": 2}]}
    code, out, _ = _run("person", "search", "p", str(portrait("C001082", "b")), "--home", home, "--json")
    assert [m["person_id"] for m in json.loads(out)["matches"]] == ["canseco"]
    assert _run("person", "disassociate", "p", "canseco", face_id, "--home", home)[0] == 0
    assert _run("person", "create", "p", "other", "--home", home)[0] == 0
    code, out, _ = _run("person", "delete", "p", "canseco", "--home", home, "--json")
    assert code == 0 and len(json.loads(out)["deleted_faces"]) == 1
    code, _, err = _run("person", "delete", "p", "canseco", "--home", home)
    assert code == 3 and "no person 'canseco'" in err
