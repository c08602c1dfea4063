"""The sweep's planning, validation, DVC-result parsing and report (the queue itself: tests/integration)."""

import json
from pathlib import Path

import pytest
import yaml

from supportlm.config import SweepParams, load_params, parse_params
from supportlm.errors import ConfigError
from supportlm.train import sweep as sw

ROOT = Path(__file__).resolve().parents[2]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_grid_is_the_full_product_in_order():
    s = SweepParams(method="grid", space={"lora.r": [8, 16], "train.learning_rate": [1e-4, 5e-4, 1e-3]})
    trials = sw.plan_trials(s)
    assert len(trials) == 6
    assert trials[0] == {"lora.r": 8, "train.learning_rate": 1e-4}
    assert trials[-1] == {"lora.r": 16, "train.learning_rate": 1e-3}


def test_random_draws_are_distinct_seeded_and_capped_by_the_grid():
    s = SweepParams(
        method="random", trials=5, seed=3, space={"lora.r": [4, 8, 16], "lora.alpha": [8, 16, 32]}
    )
    a, b = sw.plan_trials(s), sw.plan_trials(s)
    assert a == b and len(a) == 5
    assert len({json.dumps(t, sort_keys=True) for t in a}) == 5
    assert sw.plan_trials(s.model_copy(update={"seed": 4})) != a
    assert len(sw.plan_trials(s.model_copy(update={"trials": 50}))) == 9  # never more than the grid holds


def test_committed_sweep_block_plans_and_validates():
    p = load_params(ROOT / "params.yaml")
    trials = sw.plan_trials(p.sweep)
    assert len(trials) == p.sweep.trials
    sw.validate_trials(raw_params(), trials, p.sweep.fixed)  # raises on any bad value


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"space": {"evaluate.sample_rows": [8]}}, "`evaluate.sample_rows` is not a train.* or lora.* key"),
        ({"space": {"lora.r": []}}, "sweep.space.lora.r"),
        ({"space": {"lora.r": [8]}, "fixed": {"lora.r": 4}}, "both searched (space) and fixed"),
        ({"method": "bayes"}, "`sweep.method`: Input should be 'grid' or 'random'"),
    ],
)
def test_bad_sweep_blocks_fail_with_the_key(sweep, message):
    raw = raw_params()
    raw["sweep"] = sweep
    with pytest.raises(ConfigError) as exc:
        parse_params(raw)
    assert message in str(exc.value)


def test_a_bad_trial_value_fails_before_anything_is_queued():
    trials = [{"lora.r": 8}, {"lora.r": 0}]  # r >= 1
    with pytest.raises(ConfigError) as exc:
        sw.validate_trials(raw_params(), trials, {"train.train_rows": 64})
    assert "sweep trial 1 (lora.r=0)" in str(exc.value) and "`lora.r`" in str(exc.value)
    with pytest.raises(ConfigError, match="`train.lr_scheduler`"):
        sw.validate_trials(raw_params(), [{"train.lr_scheduler": "cosine_restarts"}], {})


@pytest.mark.parametrize("value", [0.0005, 2e-4, 1.0, 16, True, None, "cosine", "constant_with_warmup"])
def test_override_values_round_trip_through_yaml(value):
    assert yaml.safe_load(sw.format_value(value)) == value


def test_queue_commands_target_the_train_stage_with_fixed_then_trial_overrides():
    cmds = sw.queue_commands(["s-00"], [{"lora.r": 8}], {"train.train_rows": 64}, dvc="dvc")
    assert cmds == [["dvc", "exp", "run", "--queue", "--name", "s-00", "-S", "train.train_rows=64", "-S",
                     "lora.r=8", "train"]]  # fmt: skip


def exp_record(name: str, rev: str, r: int, best: float | None) -> dict:
    metrics = (
        {}
        if best is None
        else {
            "reports/train.json": {
                "data": {
                    "best_val_loss": best,
                    "base_val_loss": 2.8,
                    "best_step": 4,
                    "steps": 4,
                    "train_seconds": 30.0,
                    "tokens_per_s": 120.0,
                }
            }
        }
    )
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": {"params.yaml": {"data": {"lora": {"r": r}}}},
                                                "metrics": metrics}, "experiments": None}  # fmt: skip


def show_json() -> list:
    """The shape of `dvc exp show --json` (DVC 3): experiments nested under their baseline commit."""
    baseline = exp_record("main", "a" * 40, 16, 1.75)
    baseline["experiments"] = [
        {"revs": [exp_record("s-00", "b" * 40, 8, 2.1)], "executor": None, "name": "s-00"},
        {"revs": [exp_record("s-01", "c" * 40, 32, 1.9)], "executor": None, "name": "s-01"},
    ]
    return [{"rev": "workspace", "name": None, "data": {"params": {}, "metrics": {}}}, baseline]


def test_collect_reads_each_trial_marks_missing_ones_failed_and_picks_the_lowest_val_loss():
    trials = [{"lora.r": 8}, {"lora.r": 32}, {"lora.r": 64}]
    rows = sw.collect(["s-00", "s-01", "s-02"], trials, show_json())
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[0]["applied"] == {"lora.r": 8} and rows[1]["applied"] == {"lora.r": 32}  # what DVC ran with
    assert rows[1]["val_curve"] == []  # DVC's JSON drops list metrics ...
    full = {"c" * 40: {"val_curve": [{"step": 2, "val_loss": 2.1}, {"step": 4, "val_loss": 1.9}]}}
    rows = sw.collect(["s-00", "s-01", "s-02"], trials, show_json(), lambda rev: full.get(rev, {}))
    assert rows[1]["val_curve"][-1]["val_loss"] == 1.9  # ... so the curve comes from the trial's commit
    best = sw.best_trial(rows)
    assert best["name"] == "s-01"


def test_reports_name_the_best_trial_and_the_plot_is_written(tmp_path):
    s = SweepParams(method="grid", space={"lora.r": [8, 32, 64]}, fixed={"train.train_rows": 64})
    rows = sw.collect(["s-00", "s-01", "s-02"], sw.plan_trials(s), show_json())
    result = sw.summarize(s, rows, wall_s=125.0, timed_out=False)
    sw.write_reports(tmp_path, result)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["best"]["name"] == "s-01" and saved["apply_command"] == "dvc exp apply s-01"
    assert saved["n_ok"] == 2 and saved["n_trials"] == 3
    md = (tmp_path / "sweep.md").read_text()
    assert "**Best: `s-01`**" in md and "`train.train_rows=64`" in md and "Failed trials: s-02" in md
    assert md.index("`s-01` **(best)**") < md.index("`s-00`")  # ranked by val loss
    assert "|---|---:|---:|---:|---:|---:|---:|---|" in md  # numeric columns (lora.r included) right-aligned
    assert "| `s-02` | 64 | – | – | – | – | – | failed |" in md  # a failed trial has no numbers
    png = tmp_path / "plots/sweep/val_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
