"""Benchmark bookkeeping: every summary row carries its own provenance, merging never restamps it,
and every committed row has one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import _common  # noqa: E402


def _row(variant: str) -> dict:
    return {"benchmark": "b", "dataset": "d", "image_size": 28, "model": "m", "variant": variant, "metrics": {"test_acc": 0.5}}


def test_new_rows_are_stamped_and_earlier_rows_keep_theirs(tmp_path, monkeypatch):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(_common, "RESULTS", results)
    monkeypatch.setattr(_common, "SUMMARY", results / "summary.json")
    first = {"git": {"commit": "aaa", "dirty": True}, "command": "python first.py", "data_sha256": {"x": "1"},
             "machine": {"torch_threads": 1}}
    _common.write_results("one", first, [_row("v1")])
    second = {"git": {"commit": "bbb", "dirty": False}, "command": "python second.py", "data_sha256": {"x": "1"},
              "machine": {"torch_threads": 2}}
    merged = _row("v0") | {"provenance": {"commit": "old", "dirty": True}}  # a row merged from an earlier run
    _common.write_results("two", second, [_row("v2"), merged])
    rows = {r["variant"]: r for r in json.loads((results / "summary.json").read_text())}
    assert rows["v1"]["provenance"]["commit"] == "aaa" and rows["v1"]["provenance"]["dirty"] is True
    assert rows["v1"]["provenance"]["command"] == "python first.py" and rows["v1"]["provenance"]["threads"] == 1
    assert rows["v2"]["provenance"]["commit"] == "bbb" and rows["v0"]["provenance"] == {"commit": "old", "dirty": True}
    assert set(rows["v2"]["provenance"]) >= {"commit", "dirty", "command", "data_sha256", "precision", "threads"}


def test_a_reindex_changes_intervals_only_and_keeps_the_rows_stamp(tmp_path, monkeypatch):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(_common, "RESULTS", results)
    monkeypatch.setattr(_common, "SUMMARY", results / "summary.json")
    trained = {"git": {"commit": "aaa", "dirty": False}, "command": "python train.py", "machine": {"torch_threads": 2,
                                                                                                 "auto_precision": "fp32"}}
    _common.write_results("one", trained, [_row("v1") | {"metrics": {"test_acc": 0.5, "latency_ms_p50": 1.0},
                                                          "ci": {"test_acc": [0.4, 0.6]}}])
    later = {"git": {"commit": "bbb", "dirty": False}, "command": "python train.py --reindex",
             "machine": {"torch_threads": 1, "auto_precision": "bfloat16"}}
    again = _row("v1") | {"metrics": {"test_acc": 0.5, "latency_ms_p50": 9.0}, "ci": {"test_acc": [0.38, 0.62]},
                          "ci_method": "cluster bootstrap", "provenance_note": "intervals recomputed at bbb"}
    _common.write_results("one", later, [again, _row("v2")], keep_from_index=("provenance", "metrics"))
    rows = {r["variant"]: r for r in json.loads((results / "summary.json").read_text())}
    assert rows["v1"]["ci"] == {"test_acc": [0.38, 0.62]} and rows["v1"]["ci_method"] == "cluster bootstrap"
    assert rows["v1"]["provenance"]["commit"] == "aaa" and rows["v1"]["provenance"]["precision"]["train"] == "fp32"
    assert rows["v1"]["metrics"]["latency_ms_p50"] == 1.0 and rows["v1"]["provenance_note"] == "intervals recomputed at bbb"
    assert rows["v2"]["provenance"]["commit"] == "bbb"  # a row the index did not hold is stamped as new


def test_the_training_precision_is_the_writing_machines_not_this_ones():
    recorded = {"git": {}, "machine": {"cpu": "Some CPU", "auto_precision": "fp32"}}
    assert _common.row_provenance(recorded)["precision"]["train"] == "fp32"
    older = {"git": {}, "machine": {"cpu": "a CPU of another machine"}}  # written before the field existed
    assert _common.row_provenance(older)["precision"]["train"].startswith("unrecorded")
    here = {"git": {}, "machine": _common.machine()}
    assert here["machine"]["auto_precision"] in ("fp32", "bfloat16", "float16")


def test_every_committed_row_carries_its_own_provenance():
    rows = json.loads((REPO / "benchmarks" / "results" / "summary.json").read_text())
    missing = [(r["benchmark"], r["variant"]) for r in rows if not r.get("provenance")]
    assert not missing, f"rows without provenance: {missing[:5]}; run python benchmarks/backfill_provenance.py"


def test_seed_mean_interval_from_kept_predictions(tmp_path, monkeypatch):
    import numpy as np

    from hybridmednet.engine.evaluate import record_evaluation, write_predictions
    from hybridmednet.engine.run_dir import RunDir

    results = tmp_path / "benchmarks" / "results"
    (results / "predictions").mkdir(parents=True)
    monkeypatch.setattr(_common, "RESULTS", results)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 80)
    files = []
    for seed in range(3):
        probs = np.clip(np.eye(2)[targets] * 0.6 + rng.random((80, 2)) * 0.4, 1e-3, None)
        run = tmp_path / f"run{seed}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best.json").write_text(json.dumps({"weights_sha256": f"sha{seed}"}))
        write_predictions(run / "predictions_test.csv", [f"c{i}" for i in range(80)], probs / probs.sum(1, keepdims=True),
                          targets, ["a", "b"], False, groups=[f"p{i // 2}" for i in range(80)])
        record_evaluation(RunDir(run), "test", {"split": "test"}, run / "predictions_test.csv", f"sha{seed}")
        files.append(_common.keep_predictions(run, f"x_seed{seed}"))
    out = _common.seed_mean_interval(files, ["a", "b"], n_resamples=100)
    assert "seed-mean cluster percentile bootstrap over 40 groups" in out["ci_method"]
    for name, (lo, hi) in out["ci95"].items():
        assert lo <= out["point"][name] <= hi


def test_kept_predictions_must_belong_to_the_current_checkpoint(tmp_path, monkeypatch):
    import pytest

    from hybridmednet.errors import DataError

    monkeypatch.setattr(_common, "RESULTS", tmp_path / "benchmarks" / "results")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.json").write_text(json.dumps({"weights_sha256": "new"}))
    (run / "predictions_test.csv").write_text("id,target,prob_a\n")
    with pytest.raises(DataError, match="no 'test' entry for the run's best checkpoint"):
        _common.keep_predictions(run, "stale")
