"""HubSpot burst benchmark: 1,000 counted events across 100 messages for one portal.

Runs the burst test (real emulator, client, RQ workers, PostgreSQL and Redis, as the
test suite sets them up) and prints how many HubSpot API requests the burst took per
event, and the busiest 10 seconds against the budget of 100.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = (
    "tests/test_hubspot_integration.py::"
    "test_burst_of_a_thousand_events_stays_within_budget_and_loses_nothing"
)


def main() -> int:
    """Run the burst once; print its figures; exit non-zero if it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "burst.json"
        env = {**os.environ, "HUBSPOT_BURST_REPORT": str(report)}
        command = [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:logging"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True)
        if result.returncode != 0 or not report.exists():
            sys.stdout.write(result.stdout.decode()[-4000:])
            print("burst failed", file=sys.stderr)
            return 1
        figures = json.loads(report.read_text())
    print(f"events:                 {figures['events']}")
    print(f"HubSpot API requests:   {figures['requests']}")
    print(f"requests per event:     {figures['per_event']:.3f}")
    print(f"busiest 10 s (max 100): {figures['busiest_10s']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
