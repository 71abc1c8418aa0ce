"""`domainsmith report RUN_DIR`: one self-contained HTML file (plots embedded) and a PNG per plot.

The report reads only what a run already wrote (eval.json, summary.json, stage logs, data stats), so it is cheap to
regenerate and never needs a model or a GPU.
"""

from __future__ import annotations

from .collect import ReportError
from .sections import SECTION_IDS
from .writer import ReportResult, write_report

__all__ = ["SECTION_IDS", "ReportError", "ReportResult", "write_report"]
