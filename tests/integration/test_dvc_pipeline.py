"""The DVC graph end to end on the smoke profile: repro, no-op repro, exp run, push/pull."""

import json
import shutil

import pytest

from .conftest import BIN, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DVC = str(BIN / "dvc")


def test_repro_then_noop_then_experiment_then_push_pull(project):
    run([DVC, "repro"], project)
    split = json.loads((project / "reports/split.json").read_text())
    assert split["leaked_groups"] == 0 and sum(split["counts"].values()) > 400
    clean = json.loads((project / "reports/clean.json").read_text())
    assert clean["rows_in"] == clean["rows_kept"] + clean["rows_quarantined"]
    assert (project / "reports/data_quality.md").exists() and (project / "reports/data_quality.html").exists()

    # a second repro does nothing
    again = run([DVC, "repro"], project)
    assert "Data and pipelines are up to date" in again.stdout, again.stdout
    assert "changed" not in run([DVC, "status"], project).stdout

    # an experiment with another split seed reruns split and its descendants only
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    exp = run([DVC, "exp", "run", "-S", "split.seed=7"], project)
    assert "Running stage 'split'" in exp.stdout and "Running stage 'clean'" not in exp.stdout
    show = run([DVC, "exp", "show", "--json"], project).stdout
    assert '"seed": 7' in show.replace("'", '"') or "split.seed" in show

    # push to the default local remote, wipe cache + outputs, pull them back
    run([DVC, "push"], project)
    before = (project / "data/processed/train.jsonl").read_bytes()
    shutil.rmtree(project / ".dvc/cache")
    shutil.rmtree(project / "data")
    run([DVC, "pull"], project)
    assert (project / "data/processed/train.jsonl").read_bytes() == before


def test_bad_params_fail_before_any_work(project, tmp_path):
    params = (project / "params.yaml").read_text()
    try:
        (project / "params.yaml").write_text(params.replace("near_threshold: 0.9", "near_treshold: 0.9"))
        res = run([str(BIN / "python"), "stages/clean.py"], project, check=False)
        assert res.returncode == 2
        assert "`clean.dedup.near_treshold`: unknown key" in res.stderr
        assert "Traceback" not in res.stderr
    finally:
        (project / "params.yaml").write_text(params)


def test_sweep_queues_dvc_experiments_and_reports_the_best(project):
    """`supportlm sweep`: two grid trials of the smoke train stage through DVC's queue, read back from exp show."""
    import yaml

    run([DVC, "repro", "train"], project)  # no-op after the pipeline test; makes this test stand alone
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sweep"] = {"method": "grid", "space": {"lora.r": [4, 8]},
                       "fixed": {"train.max_steps": 1, "train.warmup_ratio": 0.0, "train.eval_steps": 1}}  # fmt: skip
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny sweep"], project)
    head_lock = (project / "dvc.lock").read_text()

    run([str(BIN / "supportlm"), "sweep"], project, timeout=1200)

    result = json.loads((project / "reports/sweep.json").read_text())
    assert result["n_trials"] == 2 and result["n_ok"] == 2, result
    assert [t["applied"] for t in result["trials"]] == [{"lora.r": 4}, {"lora.r": 8}]  # the -S values DVC ran
    for t in result["trials"]:
        assert t["steps"] == 1 and t["best_val_loss"] < t["base_val_loss"]  # one real update at full lr
        (point,) = t["val_curve"]  # read from the trial's commit (DVC's JSON drops lists)
        assert point["step"] == 1 and point["val_loss"] == pytest.approx(t["best_val_loss"], abs=1e-6)
    best = min(result["trials"], key=lambda t: t["best_val_loss"])
    assert result["best"]["name"] == best["name"]
    assert (project / "reports/plots/sweep/val_loss.png").stat().st_size > 10_000
    # trials ran in temp workspaces: the main workspace's lock and params are untouched
    assert (project / "dvc.lock").read_text() == head_lock
    names = run([DVC, "exp", "ls", "--name-only"], project).stdout.split()
    assert all(t["name"] in names for t in result["trials"])
