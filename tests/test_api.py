"""The public surface: what `import facelens` exports, and that importing it is light."""

from __future__ import annotations

import subprocess
import sys

import facelens


def test_api_exports_exactly_what_all_lists() -> None:
    public = {name for name in dir(facelens) if not name.startswith("_")} | {"Engine", "__version__"}
    assert set(facelens.__all__) <= public
    for name in facelens.__all__:
        assert getattr(facelens, name) is not None


def test_api_errors_share_one_root() -> None:
    for name in facelens.__all__:
        obj = getattr(facelens, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, facelens.FacelensError)


def test_api_import_loads_no_model_runtime() -> None:
    code = ("import sys, facelens; heavy = [m for m in ('numpy', 'onnxruntime', 'cv2', 'dlib', 'PIL') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
