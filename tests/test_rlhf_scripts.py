"""The scripts behind chapters 17 and 22 and the PPO-for-text benchmark: smoke runs, the
instruction file rebuilt byte for byte, and the shipped results made by the scripts' defaults
on the checkpoint ``load_pretrained()`` loads today (a new checkpoint means new runs)."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "llmcourse" / "data"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_instructions_rebuilds_the_shipped_file(tmp_path):
    out = tmp_path / "instructions.json.gz"
    script("build_instructions").main(["--out", str(out)])
    with gzip.open(out) as a, gzip.open(DATA / "instructions.json.gz") as b:
        mine, shipped = json.load(a), json.load(b)
    assert shipped["command"] == "python scripts/build_instructions.py "        # the defaults
    assert {k: v for k, v in mine.items() if k != "command"} == {k: v for k, v in shipped.items() if k != "command"}


def test_jobs_with_many_tensors_cross_to_worker_processes():
    """A job holding 25,000 tensors (the rankings of 3,000 prompts hold 15,000) reaches a worker
    and comes back: the pool's own pickler gave each tensor a shared-memory file descriptor, ran
    out of them, and the full run died without a word."""
    code = ("import torch\nfrom llmcourse.train import run_jobs\n"
            "jobs = [{'t': [torch.full((3,), float(i)) for i in range(25000)]}, {'t': []}]\n"
            "print(run_jobs(len, jobs, 2), run_jobs(len, jobs, 1))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "[1, 1] [1, 1]"


def test_ch17_script_smoke(tmp_path):
    out = tmp_path / "ch17.json"
    res = script("ch17_sft_runs").main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    (run,) = res["runs"]
    assert [c["step"] for c in run["curve"]] == [0, 3, 4]      # updates done: evaluations after 1 (skipped), 3, 4
    assert set(run["curve"][0]["success"]) == set(res["kinds"]) == set(res["trained"]) | set(res["held_out"])
    assert set(run["examples"]) == set(res["kinds"])


def test_ch22_script_smoke(tmp_path):
    from llmcourse.gpt import load_pretrained
    from llmcourse.rlhf.reward import load_reward_model

    out, rm = tmp_path / "ch22.json", tmp_path / "rm.pt"
    res = script("ch22_ziegler_runs").main(["--smoke", "--out", str(out), "--rm-out", str(rm)])
    assert {(r["method"], r["comparisons"]) for r in res["reward_models"]} == {
        ("rankings", 8 * 6), ("rankings", 24 * 6), ("pairs", 16)}
    assert {(p["beta0"], p["target_kl"]) for p in res["ppo"]} == {(0.03, None), (0.3, None), (0.1, 3.0),
                                                                   (0.1, 8.0)}
    assert all(len(p["kl"]) == 2 and p["kl"][0] == 0.0 for p in res["ppo"])   # iteration 0: pi = rho
    lm, _, _ = load_pretrained()
    loaded = load_reward_model(rm, lm)                   # an absolute path: data_path leaves it alone
    assert loaded.head.weight.shape == (1, lm.config.n_embd)


def test_benchmark_quick_mode():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "benchmarks/rlhf_ppo.py", "--quick", "--json"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True, timeout=300).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res["tokens_per_second"]) == {"generate", "score", "update", "iteration"}
    assert all(v > 0 for v in res["tokens_per_second"].values())
    s = res["seconds"]
    assert s["generate"] + s["score"] + s["update"] <= s["iteration"] + 0.002      # each rounded to 1 ms


# ----------------------------------------------------------------------------- the shipped results



def test_shipped_ch17_runs_are_the_scripts_defaults_on_todays_checkpoint():
    from llmcourse.gpt import load_pretrained

    res = json.loads((DATA / "ch17_sft_runs.json").read_text())
    s = res["settings"]
    assert not s["smoke"] and s["steps"] == 1500 and s["seeds"] == [0, 1], s
    _, _, info = load_pretrained()
    assert all(r["pretrained_val_loss"] == info["val_loss"] for r in res["runs"]), "rerun: the checkpoint changed"
    assert all(r["curve"][-1]["step"] == s["steps"] for r in res["runs"])


def test_shipped_ch22_runs_are_the_scripts_defaults_on_todays_checkpoint():
    from llmcourse.gpt import load_pretrained
    from llmcourse.rlhf.reward import load_reward_model

    res = json.loads((DATA / "ch22_ziegler_runs.json").read_text())
    s = res["settings"]
    assert not s["smoke"] and s["iterations"] == 40 and s["batch"] == 64 and s["ppo_seeds"] == [0, 1], s
    lm, _, info = load_pretrained()
    assert res["pretrained"]["val_loss"] == info["val_loss"], "rerun: the checkpoint changed"
    load_reward_model("ch22_reward_model.pt", lm)       # raises when trained on another shape
    assert len(res["ppo"]) == len(s["betas"]) * len(s["ppo_seeds"]) + len(s["targets"])   # adaptive runs: one seed
    assert all(len(p["kl"]) == s["iterations"] for p in res["ppo"])


def test_ch23_script_smoke(tmp_path):
    out = tmp_path / "ch23.json"
    res = script("ch23_summarize_runs").main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert [r["comparisons"] for r in res["reward_models"]] == [12, 6]
    assert all("state" not in r for r in res["reward_models"])              # no weights in the JSON
    assert {(p["rm_comparisons"], p["seed"]) for p in res["ppo"]} == {(12, 0), (6, 0)}
    for p in res["ppo"]:
        assert len(p["kl"]) == len(p["terms"]["vs_reference"]) == 2 and p["kl"][0] == 0.0   # iteration 0: pi = SFT
        assert p["terms"]["score"] == p["labeller"]                       # the log scores what PPO's log records
        assert set(p["final_eval"]) >= {"score", "vs_sft", "vs_reference", "length"}


def test_shipped_ch23_runs_are_the_scripts_defaults_on_todays_checkpoint():
    from llmcourse.gpt import load_pretrained

    path = DATA / "ch23_summarize_runs.json"
    assert path.stat().st_size < 200_000
    res = json.loads(path.read_text())
    defaults = vars(script("ch23_summarize_runs").parser().parse_args([]))
    s = res["settings"]
    assert {k: v for k, v in s.items() if k not in ("jobs", "threads")} == {
        k: v for k, v in defaults.items() if k not in ("jobs", "threads", "out")}, s
    _, _, info = load_pretrained()
    assert res["pretrained"]["val_loss"] == info["val_loss"], "rerun: the checkpoint changed"
    assert len(res["ppo"]) == len(s["rm_sizes"]) * len(s["ppo_seeds"]) >= 3
    assert all(len(p["kl"]) == len(p["terms"]["score"]) == s["iterations"] for p in res["ppo"])
