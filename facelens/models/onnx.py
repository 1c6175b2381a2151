"""Creating onnxruntime sessions the same way for every model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["open_session"]


def open_session(path: Path, *, intra_op_threads: int, inter_op_threads: int = 1,
                 config: Mapping[str, str] | None = None) -> onnxruntime.InferenceSession:
    """Open an ONNX model on the CPU with explicit thread counts.

    ``intra_op_threads`` is the number of threads one operator (a convolution) may use; 0 lets
    onnxruntime choose (one per physical core). ``config``: session configuration entries
    (``SessionOptions.add_session_config_entry``), e.g. ``{"session.disable_quant_qdq": "1"}``.
    """
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
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{path}: onnxruntime could not load the model: {exc}") from exc
