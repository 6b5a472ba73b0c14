"""Tuning on tiny data: the space is checked before any trial, a study resumes to its total,
a hopeless trial is pruned, two workers share one sqlite study, and the best trial is tested once."""

import json
import subprocess
import sys

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from hybridmednet.cli.main import main  # noqa: E402
from hybridmednet.errors import ConfigError  # noqa: E402
from hybridmednet.tune.space import read_space, suggest  # noqa: E402
from hybridmednet.tune.study import Study, _pruner  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

SPACE = {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "train.loss": {"type": "categorical", "choices": ["ce", "focal"]},
         "train.loss_kwargs.gamma": {"type": "float", "low": 1.0, "high": 3.0, "when": {"train.loss": "focal"}}}


@pytest.fixture
def files(tiny_npz, tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2)))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    return config, space


def test_space_errors_come_before_any_trial(files, tmp_path):
    config, _ = files
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text(yaml.safe_dump({"train.lrr": {"type": "float", "low": 0.001, "high": 0.01}}))
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        Study(str(config), str(bad_key), tmp_path / "s1")
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text(yaml.safe_dump({"train.ema_decay": {"type": "float", "low": 0.5, "high": 1.5}}))
    with pytest.raises(ConfigError, match=r"train.ema_decay=1.5"):
        Study(str(config), str(bad_value), tmp_path / "s2")
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text(yaml.safe_dump({"train.lr": {"type": "float", "low": 0.001, "high": 0.01, "when": {"x.y": 1}}}))
    with pytest.raises(ConfigError, match="not parameters of the space"):
        read_space(orphan)
    assert not (tmp_path / "s1" / "trials").exists()


def test_conditional_parameters_follow_their_parent(files):
    space = read_space(files[1])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        values = suggest(study.ask(), space)
        assert ("train.loss_kwargs.gamma" in values) == (values["train.loss"] == "focal")


def test_study_resumes_to_its_total_and_tests_the_best_once(files, tmp_path, capsys):
    config, space = files
    out = tmp_path / "study"
    argv = ["tune", "--config", str(config), "--space", str(space), "--trials", "2", "--out", str(out), "--pruner", "none"]
    assert main(argv) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["n_trials"]["complete"] == 2 and "acc" in best["test"]["metrics"]
    assert best["tested"].startswith("once")
    argv[argv.index("--trials") + 1] = "3"
    assert main(argv) == 0  # the same command continues the study: one more trial, not three
    again = json.loads((out / "best.json").read_text())
    assert again["n_trials"]["complete"] == 3
    trials = sorted(p.name for p in (out / "trials").iterdir())
    assert trials == ["trial_0000", "trial_0001", "trial_0002"]
    if again["trial"] == best["trial"]:
        assert again["test"] == best["test"]  # the same best trial is not tested again


def test_a_hopeless_trial_is_pruned(files, tmp_path):
    config, space = files
    study = Study(str(config), str(space), tmp_path / "pruned", pruner="none")
    study.study.pruner = optuna.pruners.ThresholdPruner(lower=2.0)  # no val AUC reaches 2: prune at once
    study.optimize(1)
    trial = study.study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert (tmp_path / "pruned" / "trials" / "trial_0000" / "checkpoints" / "last.json").exists()
    with pytest.raises(ConfigError, match="no trial finished"):
        study.finish()


def test_multi_objective_gives_a_pareto_front(files, tmp_path):
    config, space = files
    study = Study(str(config), str(space), tmp_path / "pareto", objectives=("val", "params"))
    study.optimize(2)
    record = study.finish()
    assert record["objectives"] == ["val", "params"] and record["pareto_front"]
    assert all(len(p["values"]) == 2 for p in record["pareto_front"])


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(files, tmp_path):
    config, space = files
    out = tmp_path / "parallel"
    cmd = [sys.executable, "-m", "hybridmednet", "tune", "--config", str(config), "--space", str(space),
           "--trials", "4", "--workers", "2", "--out", str(out), "--pruner", "none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads((out / "best.json").read_text())
    assert best["n_trials"]["complete"] >= 4 and best["storage"].startswith("sqlite:///")
    assert len(list((out / "trials").iterdir())) == best["n_trials"]["complete"]


def test_study_report_page_opens_in_a_browser(files, tmp_path):
    import shutil

    config, space = files
    study = Study(str(config), str(space), tmp_path / "report", pruner="none")
    study.optimize(3)
    record = study.finish()
    page = (tmp_path / "report" / "study.html").read_text()
    assert record["report"].endswith("study.html") and page.count("<img") >= 2 and "read once" in page
    chromium = shutil.which("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("no chromium")
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page()
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto((tmp_path / "report" / "study.html").as_uri())
        assert tab.locator("table tr").count() == 4  # header + three trials
        assert all(tab.evaluate("(img) => img.naturalWidth", img) > 0 for img in tab.query_selector_all("img"))
        browser.close()
    assert errors == []


@pytest.mark.parametrize("warmup", [0, 3])
def test_the_median_pruner_waits_for_the_warmup_epochs(warmup):
    study = optuna.create_study(direction="maximize", pruner=_pruner("median", warmup=warmup, startup=1))
    good = study.ask()
    for epoch in range(1, 8):
        good.report(0.9, epoch)
    study.tell(good, 0.9)
    bad = study.ask()
    pruned_at = None
    for epoch in range(1, 8):  # epochs are reported from 1, as the trainer does
        bad.report(0.1, epoch)
        if bad.should_prune():
            pruned_at = epoch
            break
    assert pruned_at == warmup + 1  # every trial trains its warm-up epochs in full
    with pytest.raises(ConfigError, match="must be >= 0"):
        _pruner("median", warmup=-1)
