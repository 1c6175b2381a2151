"""Score -> false-match-rate calibration.

A calibration is a histogram of the scores of *impostor* pairs (two photos of different people),
measured for one recogniser (bound to its sha256) on one labelled dataset. From it,
``fmr(score)`` is the share of impostor pairs scoring at least ``score``, and ``threshold(max_fmr)`` the
lowest score whose false-match rate is at most ``max_fmr``.

The file format (``.npz``) keeps a ``curves`` dictionary so later versions can hold one histogram per
demographic group next to the overall one.
"""

from __future__ import annotations

from .table import (
    ScoreCalibration,
    build_calibration,
    impostor_histogram,
    load_calibration,
)

__all__ = ["ScoreCalibration", "build_calibration", "impostor_histogram", "load_calibration"]
