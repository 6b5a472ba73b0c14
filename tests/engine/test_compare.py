import json

import numpy as np
import pytest

from hybridmednet.cli.main import main
from hybridmednet.engine.compare import compare_runs
from hybridmednet.engine.evaluate import record_evaluation, write_predictions
from hybridmednet.engine.run_dir import RunDir
from hybridmednet.errors import DataError

CLASSES = ["benign", "malignant", "other"]


def fake_run(root, name, probs, targets, ids, *, classes=CLASSES, multilabel=False, split="test", groups=None):
    """A run directory holding only what compare reads: best.json, and evaluate's predictions CSV with
    the metrics.json entry that ties it to the checkpoint."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    best = {"class_names": classes, "multilabel": multilabel, "weights_sha256": f"sha-of-{name}"}
    (run / "checkpoints" / "best.json").write_text(json.dumps(best))
    write_predictions(run / f"predictions_{split}.csv", ids, probs, targets, classes, multilabel, groups=groups)
    record_evaluation(RunDir(run), split, {"split": split}, run / f"predictions_{split}.csv", best["weights_sha256"])
    return str(run)


@pytest.fixture
def cases():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 120)
    perfect = np.eye(3)[targets] * 0.8 + 0.2 / 3
    guess = rng.dirichlet(np.ones(3), 120)
    return [f"case{i}" for i in range(120)], targets, guess, perfect


def test_rows_are_matched_by_id(tmp_path, cases):
    ids, targets, guess, perfect = cases
    order = np.random.default_rng(1).permutation(len(ids))
    a = fake_run(tmp_path, "a", guess, targets, ids)
    b = fake_run(tmp_path, "b", perfect[order], targets[order], [ids[i] for i in order])
    out = compare_runs([a], [b], n_bootstrap=100, out=tmp_path / "cmp.json")
    assert out["metrics"]["acc"]["b"] == 1.0 and out["metrics"]["acc"]["ci95"][0] > 0
    assert json.loads((tmp_path / "cmp.json").read_text())["b"] == [b]


def test_other_cases_or_labels_are_refused(tmp_path, cases):
    ids, targets, guess, perfect = cases
    a = fake_run(tmp_path, "a", guess, targets, ids)
    fewer = fake_run(tmp_path, "fewer", perfect[:-1], targets[:-1], ids[:-1])
    with pytest.raises(DataError, match="fewer.*scores other cases"):
        compare_runs([a], [fewer])
    relabelled = fake_run(tmp_path, "relabelled", perfect, (targets + 1) % 3, ids)
    with pytest.raises(DataError, match="targets differ"):
        compare_runs([a], [relabelled])
    other_task = fake_run(tmp_path, "task", perfect, targets, ids, classes=["x", "y", "z"])
    with pytest.raises(DataError, match="not the same task"):
        compare_runs([a], [other_task])


def test_missing_predictions_say_to_evaluate(tmp_path, cases):
    ids, targets, guess, _ = cases
    a = fake_run(tmp_path, "a", guess, targets, ids, split="val")
    with pytest.raises(DataError, match=r"predictions_test.csv: missing; run `hybridmednet evaluate .* --split test`"
                                        r".*predictions_val.csv"):
        compare_runs([a], [a], "test")
    with pytest.raises(DataError, match=r"evaluate .* --split test --without-clinical` first"):
        compare_runs([a], [a], "test_without_clinical")


def test_multilabel_runs(tmp_path):
    rng = np.random.default_rng(2)
    targets = (rng.random((80, 3)) < 0.5).astype(np.int64)
    ids = [f"img{i}" for i in range(80)]
    a = fake_run(tmp_path, "a", rng.random((80, 3)), targets, ids, multilabel=True)
    b = fake_run(tmp_path, "b", targets * 0.9 + 0.05, targets, ids, multilabel=True)
    out = compare_runs([a], [b], n_bootstrap=50)
    assert out["metrics"]["subset_acc"]["b"] == 1.0 and "mcnemar_acc" not in out


def test_cli_prints_the_difference(tmp_path, cases, capsys):
    ids, targets, guess, perfect = cases
    a, b = fake_run(tmp_path, "a", guess, targets, ids), fake_run(tmp_path, "b", perfect, targets, ids)
    assert main(["compare", "--a", a, "--b", b, "--n-bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "B-A" in out and "McNemar" in out
    assert main(["compare", "--a", a, "--b", str(tmp_path / "nothing")]) == 2


def test_each_side_needs_a_run(tmp_path, cases):
    ids, targets, guess, _ = cases
    with pytest.raises(ValueError, match="at least one run"):
        compare_runs([fake_run(tmp_path, "a", guess, targets, ids)], [])


def test_predictions_of_an_earlier_checkpoint_or_edited_since_are_refused(tmp_path, cases):
    ids, targets, guess, perfect = cases
    a, b = fake_run(tmp_path, "a", guess, targets, ids), fake_run(tmp_path, "b", perfect, targets, ids)
    best = tmp_path / "b" / "checkpoints" / "best.json"
    best.write_text(json.dumps(json.loads(best.read_text()) | {"weights_sha256": "retrained"}))  # train --overwrite
    with pytest.raises(DataError, match=r"no 'test' entry for the run's best checkpoint.*run `hybridmednet evaluate"):
        compare_runs([a], [b])
    csv_path = tmp_path / "a" / "predictions_test.csv"
    csv_path.write_text(csv_path.read_text().replace("benign", "malignant", 1))
    with pytest.raises(DataError, match="changed since `evaluate` wrote it"):
        compare_runs([a], [a])


def test_lesion_ids_in_the_predictions_make_the_comparison_clustered(tmp_path, cases):
    ids, targets, guess, perfect = cases
    lesions = [f"lesion{i // 4}" for i in range(len(ids))]  # four images per lesion
    a = fake_run(tmp_path, "a", guess, targets, ids, groups=lesions)
    b = fake_run(tmp_path, "b", perfect, targets, ids, groups=lesions)
    out = compare_runs([a], [b], n_bootstrap=50)
    assert "cluster percentile bootstrap over 30 groups" in out["ci_method"]
    assert out["mcnemar_acc"][0]["test"].startswith("clustered McNemar") and out["mcnemar_acc"][0]["groups"] == 30
    plain = compare_runs([fake_run(tmp_path, "a2", guess, targets, ids)], [fake_run(tmp_path, "b2", perfect, targets, ids)],
                         n_bootstrap=50)
    assert "over cases" in plain["ci_method"] and "test" not in plain["mcnemar_acc"][0]


def test_seed_mean_interval_reads_groups_from_a_table_for_files_without_them(tmp_path, cases):
    """Predictions kept before their data had ``data.groups`` (DermaMNIST) are resampled by the
    table's lesion ids; a file's own group column wins over the table."""
    from hybridmednet.config.schema import GroupTableConfig
    from hybridmednet.engine.compare import seed_mean_interval

    ids, targets, guess, perfect = cases
    table = tmp_path / "lesions.csv"
    table.write_text("image,lesion\n" + "".join(f"{i},L{k // 4}\n" for k, i in enumerate(ids)))
    groups = GroupTableConfig(path=str(table), id_template="{image}", column="lesion")
    files = [tmp_path / f"p{s}.csv" for s in range(2)]
    for f, p in zip(files, (guess, perfect)):
        write_predictions(f, ids, p, targets, CLASSES, False)
    assert "over cases" in seed_mean_interval(files, CLASSES, 50)["ci_method"]
    assert "over 30 groups" in seed_mean_interval(files, CLASSES, 50, group_table=groups)["ci_method"]
    for f, p in zip(files, (guess, perfect)):
        write_predictions(f, ids, p, targets, CLASSES, False, groups=[f"own{k // 8}" for k in range(len(ids))])
    assert "over 15 groups" in seed_mean_interval(files, CLASSES, 50, group_table=groups)["ci_method"]
