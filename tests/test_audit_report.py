"""The audit report: one self-contained HTML page and a JSON file with the same numbers."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facelens import InvalidArgumentError
from facelens.audit.metrics import (
    demographic_differentials,
    false_match_experiment,
    find_near_duplicates,
    identification,
    lfw_accuracy,
    pair_histograms,
    verification,
)
from facelens.audit.report import build_audit, render_html, write_report


def _audit(tmp_path: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n, n_subjects = 400, 150
    subjects = rng.integers(0, n_subjects, n)
    centres = rng.normal(size=(n_subjects, 16))
    emb = centres[subjects] + 0.7 * rng.normal(size=(n, 16))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([f"p{s}" for s in subjects])
    groups = {"sex": np.where(subjects % 3 == 0, "F", "M"), "age_band": np.where(subjects % 2 == 0, "18-29", "")}
    dup = find_near_duplicates(emb, ids, 0.97)
    hists = pair_histograms(emb, ids, groups, exclude=dup.pairs)
    pairs = rng.integers(0, n, size=(60, 2))
    lfw = lfw_accuracy((emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1), ids[pairs[:, 0]] == ids[pairs[:, 1]],
                       np.arange(60) % 10)
    images = []
    for i in range(6):
        path = tmp_path / f"face{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    fme = false_match_experiment(
        emb[:6], ids[:6], {"sex": groups["sex"][:6]}, emb[200:], ids[200:], [("strict", 0.8, "few"), ("lax", 0.3, "")],
        mate_emb=emb[6:12], top_n=4, probe_paths=images, gallery_paths=[images[0]] * 200)
    return build_audit(
        model={"name": "toy", "sha256": "ab" * 32},
        dataset={"name": "synthetic", "description": "Random clusters.", "summary": {"images": n}},
        operating_point={"threshold": 0.6, "target_fmr": 1e-3, "policy": "test"},
        verification=verification(hists, 0.6, lfw=lfw),
        differentials=demographic_differentials(hists, 0.6, 1e-3, min_impostor_pairs=1000),
        identification=identification(emb, ids, groups, threshold=0.6),
        false_match_experiment=fme, near_duplicates=dup)


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _audit(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def page(audit: dict[str, Any]) -> str:
    return render_html(audit)


def test_report_html_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.findall(r"\bhref=", page)
    assert page.count("data:image/png;base64,") >= 4  # DET all, DET by two columns, heatmaps, growth
    assert page.count("data:image/jpeg;base64,") == 8  # four stranger pairs, two thumbnails each


def test_report_html_leads_with_the_summary_numbers(audit: dict[str, Any], page: str) -> None:
    page = html.unescape(page)
    d = audit["differentials"]
    summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>Error trade-off")]
    assert "0.6" in summary and "1 in 1,000" in summary
    assert d["overall_fmr"]["plain"] in summary and d["overall_fnmr"]["plain"] in summary
    assert d["columns"][0]["fmr_ratio"]["explanation"] in page
    order = [page.index(h) for h in ("<h2>Summary", "<h2>Error trade-off", "<h2>True-accept", "<h2>Demographic",
                                     "<h2>Identification", "<h2>False-match", "<h2>Data and model")]
    assert order == sorted(order)
    assert "not measurable" in page  # TAR at FMR 1e-6 from ~80,000 impostor pairs
    assert "coarse annotations made by others" in page


def test_write_report_json_equals_the_audit(audit: dict[str, Any], page: str, tmp_path: Path) -> None:
    html_path, json_path = write_report(audit, tmp_path / "out")
    assert html_path.read_text(encoding="utf-8") == page
    assert json.loads(json_path.read_text(encoding="utf-8")) == audit


def test_report_renders_with_only_the_required_keys_and_refuses_bad_input(tmp_path: Path) -> None:
    minimal = {"model": {"name": "m"}, "dataset": {"name": "d"}, "operating_point": {"threshold": 0.4}}
    page = render_html(minimal)
    assert "<h2>Summary</h2>" in page and "<h2>Identification" not in page
    with pytest.raises(InvalidArgumentError):
        render_html({"model": {}})
    with pytest.raises(InvalidArgumentError):
        write_report({**minimal, "x": float("nan")}, tmp_path)


def test_report_shows_predicted_vs_measured_fpir_and_flags_a_broken_target() -> None:
    from facelens.audit.metrics import fpir_check

    rng = np.random.default_rng(3)
    g = rng.normal(size=(300, 64)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = rng.normal(size=(50, 64)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    check = fpir_check(p, g, [100, 300], lambda n: (0.3, 1e-5, n > 100), lambda s: 1e-5, max_fpir=0.003)
    minimal = {"model": {"name": "m"}, "dataset": {"name": "d"}, "operating_point": {"threshold": 0.4},
               "fpir_check": check.to_dict()}
    page = render_html(minimal)
    assert "Honesty check" in page and "predicted FPIR" in page
    rows = re.findall(r"<tr><td>(\d[\d,]*)</td>", page)
    assert rows == ["100", "300"]
    assert check.points[-1].measured.k > 0.003 * 50  # random 64-d vectors often score 0.3: the target is broken
    assert "above the target" in page


def test_report_shows_the_threshold_to_four_places_not_its_float_noise() -> None:
    page = render_html({"model": {"name": "m"}, "dataset": {"name": "d"},
                        "operating_point": {"threshold": 0.43320000000000003, "target_fmr": 1e-5}})
    assert "score threshold of <b>0.4332</b>" in page and "0.43320000000000003" not in page
