"""--summary-json: how the run ended, as JSON (rankrun.output.summary)."""

from __future__ import annotations

import json

from conftest import Runs


def test_summary_json_names_how_each_rank_ended(runs: Runs) -> None:
    runs.script("rank.sh", '[ "$RANK" = 1 ] && exit 3; exec sleep 300\n')
    assert runs.gang(2, "--summary-json", "s.json", "./rank.sh").returncode == 3
    summary = json.loads((runs.workdir / "s.json").read_text())
    assert [r["state"] for r in summary["attempts"][0]["ranks"]] == ["terminated", "failed"]
