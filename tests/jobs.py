"""Job functions that tests queue for real worker processes (importable by them)."""

from __future__ import annotations

import time
from pathlib import Path


def note_after(seconds: float, path: str) -> None:
    """Write ``path``.started, wait, then write ``path``: a job that runs a while."""
    Path(f"{path}.started").write_text("started")
    time.sleep(seconds)
    Path(path).write_text("done")
