"""Two CPU processes under torchrun (gloo): DDP trains, shards the data, and rank 0 alone writes."""

import json
import os
import subprocess

import pytest
import yaml

from tests.conftest import tiny_config, torchrun_command

pytestmark = pytest.mark.slow  # two training processes under torchrun


def test_two_process_ddp_run(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2)
    cfg["name"] = "ddp"
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out = subprocess.run(torchrun_command(path), capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count('"world_size": 2') == 1  # only rank 0 reports
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert (run / "checkpoints" / "best.json").exists()
    assert len(list((run / "checkpoints").glob("last-*.safetensors"))) == 1
