"""scripts/gopher_runs.py (chapter 14's shipped runs): a smoke run of the whole pipeline."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_run_is_complete_and_resumable(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gopher_runs", REPO / "scripts" / "gopher_runs.py")
    G = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(G)
    out = tmp_path / "g.json"
    assert G.main(["--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["n_embd"] for r in data["runs"]] == [s[1] for s in G.SMOKE_SIZES]
    for r in data["runs"]:
        rec = r["record"]
        assert rec["step"] == [20, 40] and len(rec["facts"]) == len(rec["addition"]) == 2
        assert all(0 <= a <= 1 for f in ("facts", "addition", "comparison") for a in rec[f])
        assert rec["train_loss"][-1] < 3.8                   # below log(45), the uniform guess
    capsys.readouterr()
    assert G.main(["--smoke", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already in") == 2
