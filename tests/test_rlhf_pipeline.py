"""The InstructGPT pipeline command (``python -m llmcourse.rlhf.pipeline``): a ``--quick`` run
end to end; a run interrupted twice (stopped after step 1, then crashing inside the last stage)
and resumed ends with the same metrics as an uninterrupted one; a folder holding another run or
other files is refused, and ``--overwrite`` replaces only the pipeline's own files; the shipped
runs of chapter 24 used the pipeline's defaults. (PPO-ptx with a zero coefficient equal to PPO:
``tests/test_rlhf_ppo.py``.) One quick run is shared by the tests (about 25 s on one thread)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from llmcourse.rlhf import pipeline as P

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--quick", "--threads", "1", "--no-progress"]
TIMING = {"seconds", "load_average", "threads"}


def results(metrics: dict) -> dict:
    """What a run computed: every stage's entry but its timings and load averages."""
    def strip(entry):
        out = {k: v for k, v in entry.items() if k not in TIMING}
        if "history" in out:
            out["history"] = {k: v for k, v in out["history"].items() if k != "seconds"}
        return out
    return json.loads(json.dumps({name: strip(e) for name, e in metrics.items()}))   # NaN-safe comparison below


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    return out, P.main(["--out", str(out), *ARGS])


def test_quick_run_writes_every_stage(quick_run):
    out, metrics = quick_run
    assert list(metrics) == [s.name for s in P.STAGES] == ["sft", "reward", "ppo", "ppo_ptx"]
    assert json.loads((out / "metrics.json").read_text()).keys() == metrics.keys()
    for stage in P.STAGES:
        assert (out / f"{stage.name}.pt").stat().st_size > 0
        assert metrics[stage.name]["step"] == stage.step and metrics[stage.name]["seconds"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"] == asdict(P.PipelineConfig(**P.QUICK)) and len(manifest["run_id"]) == 12
    sft = metrics["sft"]["evaluation"]
    assert sft["win_rate"] == 0.5                                   # SFT against itself
    assert set(sft["success"]) == {"capitals", "repeat", "first_word", "count_words", "lowercase", "last_word"}
    for name in ("ppo", "ppo_ptx"):
        ev = metrics[name]["evaluation"]
        assert 0 <= ev["win_rate"] <= 1 and ev["val_loss"] > 0 and len(ev["responses"]) == len(sft["responses"])
    rm = metrics["reward"]["evaluation"]
    assert all(0 <= rm[k] <= 1 for k in ("accuracy", "accuracy_noiseless", "labeller_ceiling"))
    # PPO and PPO-ptx: the same seed, so the same first rollout; only PPO-ptx reads Shakespeare
    ppo, ptx = metrics["ppo"], metrics["ppo_ptx"]
    assert ppo["settings"]["ptx_coef"] == 0 and ptx["settings"]["ptx_coef"] == P.PipelineConfig().ptx_coef > 0
    assert ppo["history"]["score"][0] == ptx["history"]["score"][0]
    assert all(math.isnan(x) for x in ppo["history"]["ptx_loss"])
    assert all(math.isfinite(x) for x in ptx["history"]["ptx_loss"])


def test_a_resumed_run_ends_with_the_same_metrics(quick_run, tmp_path, monkeypatch, capsys):
    _, uninterrupted = quick_run
    out = tmp_path / "run"
    first = P.main(["--out", str(out), *ARGS, "--until", "sft"])              # stopped after step 1
    assert list(first) == ["sft"] and not (out / "reward.pt").exists()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt                                                  # killed inside the last stage
    monkeypatch.setitem(P.RUNNERS, "ppo_ptx", crash)
    with pytest.raises(KeyboardInterrupt):
        P.main(["--out", str(out), *ARGS])
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved) == ["sft", "reward", "ppo"] and not (out / "ppo_ptx.pt").exists()
    assert saved["sft"]["seconds"] == first["sft"]["seconds"]                  # step 1 was not run again
    monkeypatch.undo()
    resumed = P.main(["--out", str(out), *ARGS])
    assert "resuming run" in capsys.readouterr().out
    assert same(results(resumed), results(uninterrupted))


def test_a_folder_with_another_run_or_other_files_is_refused(quick_run, tmp_path, capsys):
    out, _ = quick_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(SystemExit) as e:
        P.main(["--out", str(out), *ARGS, "--seed", "1"])                      # other settings
    err = capsys.readouterr().err
    assert e.value.code == 2 and "another pipeline run" in err and "seed" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before      # nothing touched

    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("mine")
    with pytest.raises(P.FolderInUse, match="not empty.*--overwrite"):
        P.prepare(other, P.PipelineConfig(**P.QUICK))
    P.prepare(other, P.PipelineConfig(**P.QUICK), overwrite=True)
    assert (other / "thesis.txt").read_text() == "mine" and (other / "manifest.json").exists()


def test_overwrite_replaces_only_the_pipelines_files(quick_run, tmp_path):
    out, _ = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "notes.txt").write_text("keep me")
    old = json.loads((copy / "manifest.json").read_text())
    manifest, metrics = P.prepare(copy, P.PipelineConfig(**{**P.QUICK, "seed": 1}), overwrite=True)
    assert metrics == {} and manifest["run_id"] != old["run_id"] and manifest["settings"]["seed"] == 1
    assert sorted(p.name for p in copy.iterdir()) == ["manifest.json", "notes.txt"]


def test_a_stage_without_its_checkpoint_is_redone_with_every_later_one(quick_run, tmp_path):
    out, metrics = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "reward.pt").unlink()
    manifest, done = P.prepare(copy, P.PipelineConfig(**P.QUICK))
    assert list(done) == ["sft"] and manifest["run_id"] == json.loads((out / "manifest.json").read_text())["run_id"]


def test_the_command_runs_as_a_module(quick_run):
    out, _ = quick_run
    r = subprocess.run([sys.executable, "-m", "llmcourse.rlhf.pipeline", "--out", str(out), *ARGS, "--seed", "7"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "llmcourse.rlhf.pipeline", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "--overwrite" in r.stdout


def test_the_llmcourse_command_has_an_rlhf_verb(capsys):
    from llmcourse.cli import main

    with pytest.raises(SystemExit) as e:
        main(["rlhf", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: llmcourse rlhf") and "--overwrite" in out


def test_the_stages_are_the_runners_and_the_diagram_draws_them():
    import matplotlib
    matplotlib.use("Agg")
    assert [s.name for s in P.STAGES] == list(P.RUNNERS) and [s.step for s in P.STAGES] == [1, 2, 3, 3]
    fig = P.draw_stages()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert all(s.title in texts and s.output in texts for s in P.STAGES)


def test_the_shipped_runs_used_the_pipelines_defaults():
    path = ROOT / "llmcourse" / "data" / "ch24_pipeline_runs.json"
    if not path.exists():
        pytest.skip("no shipped runs yet (scripts/ch24_pipeline_runs.py)")
    shipped = json.loads(path.read_text())
    defaults = {k: v for k, v in asdict(P.PipelineConfig()).items() if k != "seed"}
    assert shipped["settings"] == defaults
    for run in shipped["runs"]:
        assert run["settings"] == {**defaults, "seed": run["seed"]}
        assert list(run["stages"]) == [s.name for s in P.STAGES]


def test_the_shipped_runs_script_collects_runs(quick_run, tmp_path):
    """scripts/ch24_pipeline_runs.py on a finished quick run: the pipeline resumes with nothing to do
    and the script collects its metrics, without the responses to every example."""
    import importlib.util

    out, metrics = quick_run
    shutil.copytree(out, tmp_path / "runs" / "seed0")
    spec = importlib.util.spec_from_file_location("ch24", ROOT / "scripts" / "ch24_pipeline_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--smoke", "--seeds", "0", "--jobs", "1", "--runs", str(tmp_path / "runs"),
                    "--out", str(tmp_path / "runs.json")])
    [run] = res["runs"]
    assert run["wall_seconds"] is None and run["stage_seconds"] > 0          # resumed: its stages' own seconds
    assert res["settings"] == {k: v for k, v in asdict(P.PipelineConfig(**P.QUICK)).items() if k != "seed"}
    sft = run["stages"]["sft"]["evaluation"]
    assert "responses" not in sft and set(sft["examples"]) == set(sft["success"])
    assert run["stages"]["ppo"]["evaluation"]["win_rate"] == metrics["ppo"]["evaluation"]["win_rate"]
