"""calibrate / audit / false-match experiment end to end on the bundled portraits, from Python and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import facelens
from facelens.audit import audit, calibrate, false_match_audit, read_dataset, read_exclusions
from facelens.calibration import load_calibration
from facelens.cli import main

from .conftest import PEOPLE, portrait


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 16 portraits (8 people x 2 photos) with a made-up group column: people 1-4 'x', 5-8 'y'."""
    folder = tmp_path_factory.mktemp("manifest")
    path = folder / "faces.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "subject", "team"])
        for i, person in enumerate(PEOPLE):
            for which in "ab":
                w.writerow([str(portrait(person, which)), person, "x" if i < 4 else "y"])
    return path


def test_calibrate_measures_overall_and_group_curves(engine: facelens.Engine, manifest: Path, tmp_path: Path) -> None:
    ds = read_dataset(manifest)
    stages: list[str] = []
    profile = calibrate(engine, ds, workers=1, cache=tmp_path / "cache.npz", min_group_pairs=10,
                        progress=lambda stage, done, total: stages.append(stage))
    assert profile.n_pairs == 16 * 15 // 2 - 8  # every pair but the 8 same-person ones
    assert sorted(profile.curves) == ["faces:team=x", "faces:team=y"]
    assert profile.curves["faces:team=x"].n_pairs == 8 * 7 // 2 - 4
    assert profile.model_sha256 == engine.model_sha256 and profile.meta["images_used"] == 16
    assert "embed faces" in stages and "score pairs" in stages
    # 112 pairs measure rates down to 10/112 only, too few to fit a tail: a strict target is refused, not
    # met with a weaker threshold than the shipped profile's, and the profile says so loudly
    with pytest.raises(facelens.CalibrationError, match=r"112 impostor pairs.*needs at least 100,000"):
        profile.threshold_detail(1e-5)
    assert "TOO FEW PAIRS" in profile.meta["warning"] and profile.meta["supports_down_to_fmr"] > 1e-5
    assert profile.threshold_detail(0.2)[0] > -1.0  # the rates it does measure are still read
    profile.save(tmp_path / "p.npz")
    assert load_calibration(tmp_path / "p.npz", model_sha256=engine.model_sha256).n_pairs == profile.n_pairs


def test_audit_reports_every_section_at_one_threshold(engine: facelens.Engine, manifest: Path,
                                                     tmp_path: Path) -> None:
    doc = audit(engine, read_dataset(manifest), workers=1, cache=tmp_path / "cache.npz")
    op = doc["operating_point"]
    assert op["threshold"] == engine.operating_point().threshold and op["target_fmr"] == 1e-5
    assert doc["verification"]["fnmr"]["n"] == 8 and doc["verification"]["fmr"]["n"] == 112
    assert doc["verification"]["fnmr"]["k"] == 0  # every same-person pair of the portraits matches
    [team] = doc["differentials"]["columns"]
    assert team["column"] == "team" and [x["label"] for x in team["per_label"]] == ["x", "y"]
    assert doc["identification"]["rank1"]["k"] == doc["identification"]["n_mated"] > 0
    assert doc["dataset"]["summary"]["images"] == 16


def test_false_match_experiment_counts_probes_with_a_stranger_above_each_threshold(
        engine: facelens.Engine, tmp_path: Path) -> None:
    probes_csv = tmp_path / "probes.csv"
    gallery_csv = tmp_path / "gallery.csv"
    with probes_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "subject"])
        for person in PEOPLE[:4]:
            w.writerows([[str(portrait(person, "a")), person], [str(portrait(person, "b")), person]])
    with gallery_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "subject"])
        w.writerows([[str(portrait(p, "a")), p] for p in PEOPLE])  # the probes' own people are in it...
    overlaps = tmp_path / "overlaps.csv"
    overlaps.write_text("probe,gallery\n" + "".join(f"{p},{p}\n" for p in PEOPLE[:4]))
    doc = false_match_audit(engine, read_dataset(probes_csv), [read_dataset(gallery_csv)],
                            exclude=read_exclusions(overlaps), workers=1, cache=tmp_path / "c.npz")
    fm = doc["false_match_experiment"]
    assert fm["n_probes"] == 4 and fm["n_gallery"] == 8
    assert fm["n_excluded_pairs"] == 4  # ...and left out of their own searches
    labels = [p["label"] for p in fm["points"]]
    assert any(label.startswith("search default") for label in labels)
    thresholds = [p["threshold"] for p in fm["points"]]
    assert thresholds == sorted(thresholds)
    for p in fm["points"]:  # different people: none of the portraits score near a match
        assert p["probes_with_false_match"]["k"] == 0 and p["probes_with_false_match"]["n"] == 4
        assert p["mates_found"]["k"] == 4  # each probe's own second photo does match
    assert doc["dataset"]["summary"]["known_overlaps_excluded"] == 4
    fc = doc["fpir_check"]  # predicted vs measured FPIR at the search default: one gallery size here (8 faces)
    [pt] = fc["points"]
    assert pt["gallery_size"] == 8 and pt["measured"]["k"] == 0 and pt["measured"]["n"] == 4
    assert pt["threshold"] == engine.operating_point(collection_size=8).threshold
    assert 0.0 <= pt["predicted_fpir"] <= pt["bound_fpir"] <= 0.003 * (1 + 1e-9)


def test_cli_calibrate_then_audit_then_use_the_profile(manifest: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    home = tmp_path / "home"
    r = runner.invoke(main, ["calibrate", str(manifest), "--out", str(tmp_path / "p.npz"), "--home", str(home),
                             "--workers", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.stderr and "TOO FEW PAIRS" in r.stderr  # 16 images: said loudly, on stderr
    doc = json.loads(r.stdout)
    assert doc["profile"].endswith("p.npz") and doc["thresholds"]["1e-05"]["threshold"] is None
    assert "needs at least" in doc["thresholds"]["1e-05"]["refused"]
    assert (home / "cache" / "embeddings-buffalo_s.npz").is_file()  # a rerun reuses the embeddings
    r = runner.invoke(main, ["audit", str(manifest), "--out", str(tmp_path / "report"), "--home", str(home),
                             "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output and "operating point" in r.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<html" in html and "http://" not in html and "https://" not in html
    assert json.loads((tmp_path / "report" / "report.json").read_text())["dataset"]["summary"]["images"] == 16
    # a collection refuses a profile too small for the compare default (it used to accept it, and search
    # with a weaker threshold than the shipped profile's)
    r = runner.invoke(main, ["collection", "create", "mine", "--calibration", str(tmp_path / "p.npz"),
                             "--home", str(home), "--json"])
    assert r.exit_code == 2, r.output  # a usage error: the message says what would support the rate
    assert "needs at least 100,000 impostor pairs" in r.output
    assert "mine" not in facelens.Engine(home=str(home)).list_collections()


def test_cli_audit_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.csv"
    bad.write_text("path,who\nx.jpg,a\n")
    r = runner.invoke(main, ["audit", str(bad), "--out", str(tmp_path / "o"), "--home", str(tmp_path)])
    assert r.exit_code != 0 and "subject" in r.output
    r = runner.invoke(main, ["calibrate", str(tmp_path / "none.csv"), "--out", str(tmp_path / "p.npz")])
    assert r.exit_code != 0 and "none.csv" in r.output
