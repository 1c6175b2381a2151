"""Measuring error rates on labelled datasets: readers, metrics, reports (``facelens calibrate`` and
``facelens audit``)."""

from .dataset import Dataset, DatasetError, EmbeddedDataset, embed_dataset, read_dataset
from .report import render_html, write_report
from .run import audit, calibrate, false_match_audit, read_exclusions

__all__ = [
    "Dataset",
    "DatasetError",
    "EmbeddedDataset",
    "audit",
    "calibrate",
    "embed_dataset",
    "false_match_audit",
    "read_dataset",
    "read_exclusions",
    "render_html",
    "write_report",
]
