"""Chapter 1's run script (scripts/ch01_bahdanau_runs.py) and the results it shipped."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ch01_script_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("ch01", ROOT / "scripts" / "ch01_bahdanau_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    mod.main(["--n-train", "32", "--n-val", "8", "--max-len", "6", "--epochs", "1", "--seeds", "0",
              "--out", str(out)])
    res = json.loads(out.read_text())
    assert [r["attention"] for r in res["runs"]] == [False, True]
    assert all(len(r["final_exact_each"]) == len(r["src_len"]) == 8 for r in res["runs"])
    assert res["runs"][0]["params"] < res["runs"][1]["params"]      # attention adds W, U, v


def test_shipped_ch01_results_match_the_script():
    """The data file chapter 1 loads has what it reads, from the script's defaults."""
    res = json.loads((ROOT / "llmcourse" / "data" / "ch01_bahdanau_runs.json").read_text())
    m = res["meta"]
    assert m["epochs"] == 8 and m["max_len"] == 30 and m["n_train"] == 4000
    assert sorted((r["attention"], r["seed"]) for r in res["runs"]) == [
        (a, s) for a in (False, True) for s in (0, 1, 2)]
    for r in res["runs"]:
        assert len(r["final_exact_each"]) == len(r["src_len"]) == m["n_val"]
        assert r["eval_epochs"][-1] == 8
        assert r["exact"][-1] == sum(r["final_exact_each"]) / len(r["final_exact_each"])
