"""Distillation as a user runs it: a trained teacher run (or a seed ensemble), a student trained
against it from config, and the student an ordinary run afterwards."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hybridmednet.config.loader import load_config
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.run import Run
from hybridmednet.engine.trainer import read_metrics_csv, train
from hybridmednet.errors import CheckpointError, ConfigError
from tests.conftest import tiny_config, torchrun_command


def student_config(teacher_run, name, methods, **distill):
    root = teacher_run.parent.parent  # trained_run: <root>/runs/tiny, its npz in <root>
    raw = tiny_config(root, root / "students", epochs=2)
    raw["name"] = name
    raw["model"]["kwargs"] = {"widths": [4, 8, 8, 16]}  # a smaller student than the teacher
    raw["train"]["distill"] = {"teacher": distill.pop("teacher", str(teacher_run)), "methods": methods, **distill}
    return raw


ALL = [{"name": "kd", "temperature": 4}, {"name": "dkd", "weight": 0.5}, {"name": "fitnet", "weight": 0.5},
       {"name": "at", "weight": 100, "student_layer": "stages.2", "teacher_layer": "stages.2"},
       {"name": "rkd", "weight": 0.1}, {"name": "crd", "weight": 0.2}, {"name": "reviewkd", "weight": 0.5}]


def test_every_distiller_trains_a_student_that_is_an_ordinary_run(trained_run):
    teacher = Run.load(trained_run)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    cfg = load_config(raw=student_config(trained_run, "all", ALL))
    summary = train(cfg, quiet=True)
    rows = read_metrics_csv(cfg.run_dir)
    assert {f"train_{n}" for n in ("kd", "dkd", "fitnet", "at", "rkd", "crd", "reviewkd")} <= set(rows[0])
    assert all(float(rows[0][f"train_{n}"]) > 0 for n in ("kd", "fitnet", "rkd", "crd", "reviewkd"))
    assert summary["distill"]["teachers"][0]["checkpoint_sha256"] == teacher.checkpoint_sha256
    # the best checkpoint is the student alone: the adapters and projection heads stay in `last`
    best = json.loads((cfg.run_dir / "checkpoints" / "best.json").read_text())
    assert not [k for k in load_file(cfg.run_dir / "checkpoints" / best["weights"])
                if "adapter" in k or "proj" in k or "blocks" in k]
    last = json.loads((cfg.run_dir / "checkpoints" / "last.json").read_text())
    assert any(k.startswith("distill.") for k in load_file(cfg.run_dir / "checkpoints" / last["weights"]))
    student = Run.load(cfg.run_dir)
    assert sum(p.numel() for p in student.model.parameters()) < sum(p.numel() for p in teacher.model.parameters())
    assert "acc" in evaluate_run(cfg.run_dir, "test", n_bootstrap=0)["metrics"]
    after = Run.load(trained_run).model.state_dict()  # the teacher run was read, never trained
    assert all(torch.equal(before[k], after[k].to(before[k].device)) for k in before)


def test_seed_ensemble_teacher_with_cached_clean_outputs_and_learned_weights(trained_run, tmp_path):
    other = tmp_path / "teacher_b"
    shutil.copytree(trained_run, other)  # a second member (identical weights are fine for the mechanics)
    raw = student_config(trained_run, "ensemble", [{"name": "kd"}, {"name": "rkd", "weight": 0.1}],
                         teacher=[str(trained_run), str(other)], teacher_view="clean", learned_weights=True)
    cfg = load_config(raw=raw)
    summary = train(cfg, quiet=True)
    assert len(summary["distill"]["teachers"]) == 2
    assert set(summary["distill"]["learned_weights"]) == {"task", "kd", "rkd"}
    rows = read_metrics_csv(cfg.run_dir)
    assert {"weight_task", "weight_kd", "weight_rkd"} <= set(rows[-1])
    assert rows[-1]["weight_kd"] != "1.0"  # the log-variances were optimised


def test_configuration_errors_name_the_problem(trained_run, tmp_path):
    with pytest.raises(ConfigError, match=r"no layer 'stage9'.*its layers: stem, stem\.0"):
        train(load_config(raw=student_config(trained_run, "bad_layer", [{"name": "fitnet", "student_layer": "stage9"}])),
              quiet=True)
    with pytest.raises(ConfigError, match="teacher_view: augmented"):
        train(load_config(raw=student_config(trained_run, "clean_fitnet", [{"name": "fitnet"}], teacher_view="clean")),
              quiet=True)
    with pytest.raises(ConfigError, match="holds no trained run"):
        train(load_config(raw=student_config(trained_run, "no_teacher", [{"name": "kd"}], teacher=str(tmp_path))),
              quiet=True)
    with pytest.raises(ConfigError, match="2 student layers and 3 teacher layers"):
        train(load_config(raw=student_config(trained_run, "review_pairs", [
            {"name": "reviewkd", "student_layers": ["stages.2", "stages.3"]}])), quiet=True)
    with pytest.raises(ConfigError, match="set teacher_view: own_images or remove teacher_ids"):
        load_config(raw=student_config(trained_run, "ids", [{"name": "kd"}], teacher_view="clean",
                                       teacher_ids={"path": "m.csv", "id_template": "{case}", "column": "id"}))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.temperatur"):
        load_config(raw=student_config(trained_run, "typo", [{"name": "kd", "temperatur": 2}]))


def test_resume_refuses_a_retrained_teacher(trained_run, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(trained_run, teacher)
    cfg = load_config(raw=student_config(trained_run, "resume", [{"name": "kd"}], teacher=str(teacher)))
    train(cfg, quiet=True, stop_after_epoch=1)
    retrained = load_config(raw=tiny_config(trained_run.parent.parent, tmp_path, epochs=1), overrides=["name=teacher", "seed=5"])
    train(retrained, quiet=True, overwrite=True)
    with pytest.raises(CheckpointError, match="teacher changed since this run started"):
        train(cfg, quiet=True, resume=True)


@pytest.mark.slow
def test_sigkilled_distillation_resumes_bit_for_bit(trained_run, tmp_path):
    from tests.engine.test_resume_killed import _last_weights, _metrics, _rows, _train

    def config(name):
        raw = student_config(trained_run, name, [{"name": "kd"}, {"name": "fitnet", "weight": 0.5}])
        raw["output_dir"], raw["train"]["epochs"] = str(tmp_path / "runs"), 4
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path, tmp_path / "runs" / name

    reference, reference_run = config("uninterrupted")
    _train(reference, reference_run)
    killed, killed_run = config("killed")
    assert _train(killed, killed_run, kill_at=(2, 0.05))
    _train(killed, killed_run)
    assert _metrics(killed_run) == [r for r in _metrics(reference_run)]
    expected, got = _last_weights(reference_run), _last_weights(killed_run)
    assert expected.keys() == got.keys() and any(k.startswith("distill.") for k in got)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _rows(killed_run) == 4


@pytest.mark.slow
def test_two_epoch_distillation_under_ddp(trained_run, tmp_path):
    raw = student_config(trained_run, "ddp_student", [{"name": "kd"}, {"name": "fitnet", "weight": 0.5}])
    raw["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out = subprocess.run(torchrun_command(path), capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "ddp_student" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2 and summary["distill"]["methods"] == ["kd", "fitnet"]
    assert "train_fitnet" in read_metrics_csv(tmp_path / "runs" / "ddp_student")[0]


def _student_on_other_files(teacher_run, tmp_path, *, leak: bool = False):
    """The teacher's cases saved again as 12-px PNGs under other ids (``case_<split>_<i>``), with a
    CSV mapping them to the teacher's ids (``<split>/<i>``): a student on another file of the same
    cases. ``leak``: the student's first test case is mapped onto a teacher training case."""
    from PIL import Image

    names = Run.load(teacher_run).class_names
    folder = tmp_path / "pngs"
    folder.mkdir()
    rows, mapping = ["case,file,label,split"], ["case,teacher_id"]
    with np.load(teacher_run.parent.parent / "tinymnist.npz") as arrays:
        for split in ("train", "val", "test"):
            for i, (image, label) in enumerate(zip(arrays[f"{split}_images"], arrays[f"{split}_labels"][:, 0])):
                case = f"case_{split}_{i}"
                Image.fromarray(image).resize((12, 12)).save(folder / f"{case}.png")
                rows.append(f"{case},{case}.png,{names[label]},{split}")
                teacher_id = "train/0" if leak and split == "test" and i == 0 else f"{split}/{i}"
                mapping.append(f"{case},{teacher_id}")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "map.csv").write_text("\n".join(mapping) + "\n")
    raw = student_config(teacher_run, "own_images_leak" if leak else "own_images",
                         [{"name": "kd", "temperature": 2}, {"name": "rkd", "weight": 0.1}],
                         teacher_view="own_images",
                         teacher_ids={"path": str(tmp_path / "map.csv"), "id_template": "{case}", "column": "teacher_id"})
    raw["data"]["source"] = {"kind": "csv", "path": str(tmp_path / "cases.csv"), "image_root": str(folder),
                             "path_template": "{file}", "id_column": "case", "label_column": "label",
                             "class_names": names, "split_column": "split"}
    raw["data"]["image_size"] = 12
    return load_config(raw=raw)


def test_a_teacher_reads_its_own_images_of_the_students_cases(trained_run, tmp_path):
    from hybridmednet.data.pipeline import prepare_data
    from hybridmednet.engine.distill import own_images

    cfg = _student_on_other_files(trained_run, tmp_path)
    student = prepare_data(cfg.data)
    teacher = Run.load(trained_run)
    images = own_images(teacher, cfg.train.distill.teacher_ids, student)
    own = teacher.prepare(("train",)).splits["train"]
    order = [int(case.rsplit("_", 1)[1]) for case in student.splits["train"].ids]
    assert images.shape[1:3] == (16, 16) and np.array_equal(images, own.images[order])  # 16-px originals, student order
    summary = train(cfg, quiet=True)
    assert summary["distill"]["methods"] == ["kd", "rkd"]
    assert float(read_metrics_csv(cfg.run_dir)[0]["train_kd"]) > 0


def test_a_teacher_trained_on_the_students_test_case_is_refused(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="trained on 1 of the student's val/test cases"):
        train(_student_on_other_files(trained_run, tmp_path, leak=True), quiet=True)
