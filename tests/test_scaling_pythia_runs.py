"""scripts/pythia_runs.py (chapter 16's shipped runs): a smoke run of the four experiments."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_run_of_the_four_experiments(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pythia_runs", REPO / "scripts" / "pythia_runs.py")
    P = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(P)
    out = tmp_path / "p.json"
    assert P.main(["--smoke", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert set(P.EXPERIMENTS) <= set(d)
    dd = d["dedup"]
    assert dd["duplicated"]["chars"] > dd["deduplicated"]["chars"] and len(dd["deduplicated"]["val_loss"]) >= 2
    m = d["memorisation"]
    assert len(m["seen_at_step_of_pass"]) == 4 and all(0 <= st <= m["steps_per_pass"] for st in m["seen_at_step_of_pass"])
    assert m["steps"] == 2 * m["steps_per_pass"] and all(0 <= p < 1 for p in m["place_in_pass"])
    assert len(m["memorised"]) == len(m["step"]) >= 2 and all(len(x) == 4 for x in m["memorised"])
    f = d["frequency"]
    assert len(f["count"]) == len(f["accuracy"]) == 100 and sum(f["count"]) == 400
    b = d["batch"]
    assert b["16"]["tokens"][-1] == b["32"]["tokens"][-1] and b["32"]["steps"][-1] * 2 == b["16"]["steps"][-1]
    capsys.readouterr()
    assert P.main(["--smoke", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already in") == 4
