"""Creating inference sessions the same way for every ONNX model, in onnxruntime or (optionally) OpenVINO.

The runtime is onnxruntime unless ``$FACELENS_RUNTIME`` (or a caller's ``runtime=``) says ``openvino``:
Intel's OpenVINO (the ``openvino`` PyPI package, ``pip install 'facelens[openvino]'``) runs the *same*
ONNX file on its CPU plugin, at fp32 precision (``INFERENCE_PRECISION_HINT=f32``: on CPUs with AMX or
AVX512-BF16 OpenVINO would otherwise compute in bfloat16, and the embeddings, hence the calibrated error
rates, would change with the machine). Same file, same sha256, same calibration profile: embeddings agree
with onnxruntime's to float rounding (tests/test_models_runtime.py), and the recogniser costs about half
the CPU time (BENCHMARKS.md, "Core engine: speed"). The selection applies to the ArcFace-style
recognisers; the SCRFD detector stays in onnxruntime (measured slower in OpenVINO, whose reshape for each
new input size costs more than it saves), and SFace needs onnxruntime's session options.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import ModelError

__all__ = ["RUNTIMES", "InputInfo", "OpenVINOSession", "Session", "open_session", "selected_runtime"]

RUNTIMES = ("onnxruntime", "openvino")


class InputInfo(Protocol):
    """What callers read of a model input: its name and shape (ints, or str/None for dynamic axes)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[Any]: ...


class Session(Protocol):
    """The part of ``onnxruntime.InferenceSession`` facelens uses; OpenVINO's wrapper has the same."""

    def get_inputs(self) -> Sequence[InputInfo]: ...

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[Any]: ...


def selected_runtime(runtime: str | None = None) -> str:
    """``runtime``, else ``$FACELENS_RUNTIME``, else ``onnxruntime``; raises ModelError for an unknown one."""
    value = (runtime if runtime is not None else os.environ.get("FACELENS_RUNTIME", "")).strip().lower()
    value = value or "onnxruntime"
    if value not in RUNTIMES:
        raise ModelError(f"unknown runtime {value!r} (FACELENS_RUNTIME): use one of {', '.join(RUNTIMES)}")
    return value


def open_session(path: Path, *, intra_op_threads: int, inter_op_threads: int = 1,
                 config: Mapping[str, str] | None = None, runtime: str | None = None) -> Session:
    """Open an ONNX model on the CPU with explicit thread counts, in the selected runtime.

    ``intra_op_threads`` is the number of threads one operator (a convolution) may use; 0 lets the
    runtime choose (one per physical core). ``config``: onnxruntime session configuration entries
    (``SessionOptions.add_session_config_entry``), e.g. ``{"session.disable_quant_qdq": "1"}``; a model
    that needs them is opened in onnxruntime whatever the selection. ``runtime``: see
    :func:`selected_runtime`. The graph is optimised in memory (onnxruntime's ORT_ENABLE_ALL: constant
    folding, Conv+BatchNorm fusion, the NCHWc layout); nothing is written next to the model file.
    """
    if selected_runtime(runtime) == "openvino" and not config:
        return _open_openvino(path, threads=intra_op_threads)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    try:
        session: Session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{path}: onnxruntime could not load the model: {exc}") from exc
    return session


@dataclass(frozen=True, slots=True)
class _OVInput:
    name: str
    shape: tuple[Any, ...]


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO's CPU plugin, with onnxruntime's ``get_inputs``/``run`` interface.

    One compiled model is shared; each calling thread gets its own infer request (a request is not
    thread-safe), and outputs are copied out of the request's buffers before it is reused.
    """

    def __init__(self, path: Path, compiled: Any) -> None:
        self.path = path
        self._compiled = compiled
        self._inputs = [
            _OVInput(name=p.get_any_name(),
                     shape=tuple(d.get_length() if d.is_static else None for d in p.get_partial_shape()))
            for p in compiled.inputs
        ]
        self._output_names = [p.get_any_name() for p in compiled.outputs]
        self._local = threading.local()

    def get_inputs(self) -> list[_OVInput]:
        return list(self._inputs)

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[npt.NDArray[Any]]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
        try:
            result = request.infer({name: np.ascontiguousarray(v) for name, v in input_feed.items()})
        except Exception as exc:  # OpenVINO raises RuntimeError with its own message
            raise ModelError(f"{self.path}: OpenVINO could not run the model: {exc}") from exc
        by_name = {p.get_any_name(): np.array(v, copy=True) for p, v in result.items()}
        names = self._output_names if output_names is None else list(output_names)
        return [by_name[n] for n in names]


def _open_openvino(path: Path, *, threads: int) -> OpenVINOSession:
    try:
        import openvino
    except ImportError as exc:
        raise ModelError(
            f"FACELENS_RUNTIME=openvino, but the optional package openvino is not installed: "
            f"pip install 'facelens[openvino]' ({exc})") from exc
    props: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "f32",  # the same numbers as onnxruntime, on any CPU
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,  # the service shares its cores with other work
    }
    if threads > 0:
        props["INFERENCE_NUM_THREADS"] = threads
    try:
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", props)
    except Exception as exc:
        raise ModelError(f"{path}: OpenVINO could not load the model: {exc}") from exc
    return OpenVINOSession(path, compiled)
