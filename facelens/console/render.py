"""Templates (Jinja2, autoescaped), the security headers of every console page, and the plain words the
pages use for scores, rates and refusals."""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from ..engine import _about

__all__ = ["CSP", "SECURITY_HEADERS", "Picture", "compare_words", "html_page", "match_words", "picture",
           "refusal_words", "templates"]

#: No inline script or style, nothing from another origin; frames only of the console's own audit reports.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")

# same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the console's own forms
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
                    "Cross-Origin-Opener-Policy": "same-origin"}

_REFUSALS = {
    "SMALL_BOUNDING_BOX": "the face is too small in the image",
    "LOW_SHARPNESS": "the face is too blurred",
    "LOW_BRIGHTNESS": "the face is too dark (or too bright)",
    "EXTREME_POSE": "the face is turned too far from the camera",
    "LOW_CONFIDENCE": "the detector is not sure this is a face",
    "EXCEEDS_MAX_FACES": "more faces than asked for (max faces): a smaller one is left out",
}


def refusal_words(reason: str) -> str:
    """A refusal reason (``RefusalReason``) in words, with its code."""
    return f"{_REFUSALS.get(str(reason), str(reason).lower().replace('_', ' '))} ({reason})"


def once_in(fmr: float) -> str:
    """``fmr`` as 'about once in N comparisons'."""
    if fmr <= 0:
        return "never among the calibration's pairs of strangers"
    if fmr >= 0.5:
        return "more often than not"
    return f"about once in {_about(1 / fmr)} comparisons"


def compare_words(c: Mapping[str, Any]) -> str:
    """The decision of a compare in plain words."""
    fmr, score, threshold = float(c["fmr"]), float(c["score"]), float(c["threshold"])
    how = (" (extrapolated: fewer than 10 calibration pairs of strangers scored this high)"
           if c.get("fmr_extrapolated") else "")
    rule = (f"The decision threshold, {threshold:.3f}, is set so that two different people are declared a match "
            f"at most {once_in(float(c['max_fmr']))} (max FMR {float(c['max_fmr']):.0e}).")
    if c.get("match"):
        return (f"These two faces match: two different people score this high ({score:.3f}) {once_in(fmr)}{how}. "
                + rule)
    return (f"These two faces do not match: the score {score:.3f} is below the threshold; two different people "
            f"score this high {once_in(fmr)}{how}. " + rule)


def match_words(m: Mapping[str, Any], collection_size: int | None) -> str:
    """What an identify match's score means in the collection searched."""
    fmr = float(m["fmr"])
    expected = fmr * collection_size if collection_size else None
    among = (f"; among the {collection_size:,} faces searched, about {expected:.2g} strangers would be expected to "
             f"score this high" if expected is not None else "")
    return f"Two different people score {float(m['score']):.3f} or more {once_in(fmr)}{among}."


@dataclass(frozen=True, slots=True)
class Picture:
    """An uploaded image ready to show: a JPEG data URL and its size, with face boxes in its pixels."""

    url: str
    width: int
    height: int
    boxes: tuple[dict[str, Any], ...]


def picture(image: bytes, faces: Sequence[Mapping[str, Any]], *, max_side: int = 900) -> Picture | None:
    """The image shrunk to at most ``max_side`` pixels and its faces' boxes scaled to it (each box: x, y, w,
    h, label, ok). None when the image cannot be shown (the engine read it; the browser may still not)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(image)) as opened:
            im: Image.Image = ImageOps.exif_transpose(opened).convert("RGB")
        scale = min(1.0, max_side / max(im.size))
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
        width, height = im.size
    except Exception:  # noqa: BLE001 - an image PIL cannot show is shown without its picture
        return None
    boxes = []
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = (float(v) * scale for v in f["bbox"])
        boxes.append({"x": round(x1, 1), "y": round(y1, 1), "w": round(x2 - x1, 1), "h": round(y2 - y1, 1),
                      "label": str(f.get("label", i + 1)), "ok": not f.get("refusal_reasons")})
    return Picture(url="data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode(),
                   width=width, height=height, boxes=tuple(boxes))


def _when(value: Any) -> str:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = re.sub(r"\.\d+(?=[+Z]|$)", "", str(value or ""))  # whole seconds are enough to read
    return text.replace("T", " ").replace("+00:00", " UTC").replace("Z", " UTC")


def _rate(value: Any) -> str:
    if value is None:
        return "-"
    x = float(value)
    return "0" if x == 0 else (f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}")


def _count(value: Any) -> str:
    return f"{int(value):,}" if value is not None and not (isinstance(value, float) and math.isnan(value)) else "-"


templates = jinja2.Environment(
    loader=jinja2.PackageLoader("facelens.console", "templates"),
    autoescape=True,  # every {{ }} is escaped, whatever the template's name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)
templates.filters.update(when=_when, rate=_rate, count=_count, refusal=refusal_words, once_in=once_in)


def html_page(name: str, http_status: int = 200, headers: Mapping[str, str] | None = None,
              **context: Any) -> HTMLResponse:
    """Render template ``name`` with ``context`` as a page with the console's security headers."""
    body = templates.get_template(name).render(**context)
    return HTMLResponse(body, status_code=http_status, headers={**SECURITY_HEADERS, **(headers or {})})
