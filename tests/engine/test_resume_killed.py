"""Exact resume as a user meets it: a real ``hybridmednet train`` process killed with SIGKILL at
random moments, restarted with ``--resume`` in a fresh process, must end bit for bit where an
uninterrupted run ends (every ``metrics.csv`` value but the timings, and the final weights).

The recipe uses channels_last and EMA on purpose: restored Adam moments once came back in NCHW
order under a channels_last model, and the fused AdamW kernel paired the wrong elements, so the
first resumed epoch drifted (an in-process resume test could not see it).
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from hybridmednet.errors import ConfigError
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

TIMING_COLUMNS = {"train_img_s", "epoch_s"}
EPOCHS = 6


def _config(tiny_npz: Path, tmp_path: Path, name: str) -> Path:
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=EPOCHS, channels_last=True)
    raw["name"] = name
    raw["model"]["drop_rate"] = 0.2
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _rows(run: Path) -> int:
    try:
        return max(len((run / "metrics.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def _train(config: Path, run: Path, *, kill_at: tuple[int, float] | None = None) -> bool:
    """Run the CLI in a fresh process (``--resume`` when the run has a checkpoint). ``kill_at=(rows,
    delay)``: SIGKILL it ``delay`` seconds after ``metrics.csv`` reaches ``rows`` epochs, i.e. at a
    random moment of the next epoch, its validation or its checkpoint writes. True if it was killed."""
    resume = (run / "checkpoints" / "last.json").exists()
    command = [sys.executable, "-m", "hybridmednet", "train", "--config", str(config), "--quiet",
               "--resume" if resume else "--overwrite"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    if kill_at is not None:
        rows, delay = kill_at
        while proc.poll() is None and _rows(run) < rows and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.wait(timeout=max(deadline - time.monotonic(), 1))
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    return False


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def _last_weights(run: Path) -> dict[str, torch.Tensor]:
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    return load_file(run / "checkpoints" / meta["weights"])


def test_sigkilled_training_resumes_bit_for_bit(tiny_npz, tmp_path):
    reference, reference_run = _config(tiny_npz, tmp_path, "uninterrupted"), tmp_path / "runs" / "uninterrupted"
    _train(reference, reference_run)
    expected_rows, expected = _metrics(reference_run), _last_weights(reference_run)
    assert len(expected_rows) == EPOCHS
    epoch_s = max(float(r["epoch_s"]) for r in csv.DictReader(open(reference_run / "metrics.csv")))

    rng = random.Random(0)
    kills = 0
    for trial in range(2):
        config, run = _config(tiny_npz, tmp_path, f"killed{trial}"), tmp_path / "runs" / f"killed{trial}"
        # two or three kills, each at a random moment of a random later epoch, then resume to the end
        for _ in range(rng.choice((2, 3))):
            if _rows(run) >= EPOCHS - 1:
                break
            kills += _train(config, run, kill_at=(rng.randint(_rows(run) + 1, EPOCHS - 1), rng.uniform(0, epoch_s)))
        _train(config, run)
        assert _metrics(run) == expected_rows, f"trial {trial}: metrics.csv differs from the uninterrupted run"
        weights = _last_weights(run)
        assert weights.keys() == expected.keys()
        for key in expected:
            assert torch.equal(weights[key], expected[key]), f"trial {trial}: {key} differs"
    assert kills >= 3  # the trials really interrupted training (at least 2 kills each, unless a trial ends early)


def test_resume_refuses_a_changed_config_naming_the_keys(tiny_npz, tmp_path):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2)
    train(load_config(raw=raw), quiet=True)
    changed = load_config(raw=raw, overrides=["train.lr=0.1", "data.augment=none"])
    with pytest.raises(ConfigError, match=r"differs from the run's in data\.augment, train\.lr"):
        train(changed, quiet=True, resume=True)
    with pytest.raises(ConfigError, match="only a larger value"):
        train(load_config(raw=raw, overrides=["train.epochs=1"]), quiet=True, resume=True)
    summary = train(load_config(raw=raw, overrides=["train.epochs=3"]), quiet=True, resume=True)  # the one allowed change
    assert summary["epochs_run"] == 3


def test_resume_accepts_a_run_saved_before_new_config_keys_and_post_training_options(tiny_npz, tmp_path):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)
    cfg = load_config(raw=raw)
    train(cfg, quiet=True)
    last = cfg.run_dir / "checkpoints" / "last.json"
    meta = json.loads(last.read_text())
    del meta["config"]["eval"]["conformal"]  # as written by an older version, before the key existed
    last.write_text(json.dumps(meta))
    resumed = load_config(raw=raw, overrides=["train.epochs=2", "eval.conformal.alpha=0.2",
                                              "eval.risk_groups={odd: ['1']}"])
    assert train(resumed, quiet=True, resume=True)["epochs_run"] == 2
