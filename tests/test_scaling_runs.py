"""scripts/scaling_runs.py: the plan of the shipped grid, and a smoke run of the whole pipeline."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from llmcourse.scaling import fit_power_law

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("scaling_runs", REPO / "scripts" / "scaling_runs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scaling_runs"] = mod                  # so that worker processes can unpickle its functions
    spec.loader.exec_module(mod)
    return mod


def test_the_grid_is_on_isoflop_lines():
    S = _script()
    runs = S.plan()
    budgets = sorted({r["budget"] for r in runs})
    assert len(budgets) >= 4
    for C in budgets:
        at = [r for r in runs if r["budget"] == C]
        assert 5 <= len(at) <= 7
        for r in at:                                   # whole steps: within 1% of the budget
            assert abs(r["flops"] / C - 1) < 0.01, r
        ratios = [r["D"] / r["N"] for r in at]
        assert min(ratios) < 20 < max(ratios)          # the window brackets the paper's ratio
    assert len({r["id"] for r in runs}) == len(runs)


def test_smoke_run_is_complete_and_resumable(tmp_path, capsys):
    S = _script()
    out = tmp_path / "grid.json"
    assert S.main(["--smoke", "--workers", "1", "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "estimated:" in first and "4 to train" in first
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 4 and "6 N D" in data["meta"]["flops"]
    for r in data["runs"]:
        c = r["curve"]
        assert c["step"][-1] == r["steps"] - 1 and c["tokens"][-1] == r["D"]
        assert np.all(np.diff(c["flops"]) > 0) and abs(c["flops"][-1] / r["flops"] - 1) < 1e-9
        assert c["val_loss"][-1] == r["final_loss"] < c["val_loss"][0]          # it learned something
    a, b = fit_power_law([r["flops"] for r in data["runs"]], [r["final_loss"] for r in data["runs"]])
    assert np.isfinite(a) and np.isfinite(b)
    assert S.main(["--smoke", "--workers", "1", "--out", str(out)]) == 0            # resumed: nothing to do
    assert "4 runs already in" in capsys.readouterr().out
    assert json.loads(out.read_text())["runs"] == data["runs"]
