"""ArcFace-style recogniser (ONNX): aligned face crops in, unit-length embeddings out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from .onnx import open_session

__all__ = ["ArcFace", "RecognizerSpec", "preprocess"]


@dataclass(frozen=True, slots=True)
class RecognizerSpec:
    """How a recogniser expects its input, declared (never guessed from tensor shapes).

    Pixels are fed as ``(value - input_mean) / input_std`` in channel order ``color`` ("RGB"/"BGR"),
    NCHW, on crops of ``input_size`` pixels aligned to the ArcFace template.
    """

    input_size: int = 112
    input_mean: float = 127.5
    input_std: float = 127.5
    color: str = "RGB"
    embedding_size: int = 512


def preprocess(crops: npt.NDArray[np.uint8], spec: RecognizerSpec) -> npt.NDArray[np.float32]:
    """The model input for (n, s, s, 3) uint8 RGB crops: (n, 3, s, s) float32, normalised per ``spec``."""
    x = crops.astype(np.float32)
    if spec.color.upper() == "BGR":
        x = x[..., ::-1]
    x = ((x - spec.input_mean) / spec.input_std).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


class ArcFace:
    """One recogniser session; ``embed`` runs all crops of an image in one model call."""

    def __init__(self, path: Path, spec: RecognizerSpec, *, intra_op_threads: int) -> None:
        self.path = path
        self.spec = spec
        self.session = open_session(path, intra_op_threads=intra_op_threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]) and tuple(shape[2:]) != (
            spec.input_size, spec.input_size):
            raise ModelError(
                f"{path}: the manifest declares input_size {spec.input_size} but the model's input is "
                f"{shape[2]}x{shape[3]}"
            )

    def embed(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Embed (n, s, s, 3) uint8 RGB aligned crops; returns (n, d) float32 L2-normalised."""
        if crops.shape[0] == 0:
            return np.zeros((0, self.spec.embedding_size), dtype=np.float32)
        out = self.session.run(None, {self.input_name: preprocess(crops, self.spec)})[0]
        out = np.asarray(out, dtype=np.float32).reshape(crops.shape[0], -1)
        if out.shape[1] != self.spec.embedding_size:
            raise ModelError(
                f"{self.path}: model returned {out.shape[1]}-d embeddings, manifest declares "
                f"{self.spec.embedding_size}"
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
