"""Few-shot evaluation on tiny data the test makes: novel classes only, disjoint groups,
reproducible episodes, and the command line."""

import json

import numpy as np
import pytest
import yaml

from hybridmednet.cli.main import main
from hybridmednet.config.loader import load_config
from hybridmednet.engine.fewshot import fewshot_evaluate, novel_classes, sample_episodes
from hybridmednet.errors import ConfigError
from tests.conftest import tiny_config, write_npz


@pytest.fixture
def six_class_npz(tmp_path):
    """Six learnable classes, 16 px: a run trains on the first three, few-shot reads the other three."""
    write_npz(tmp_path / "threemnist.npz", n_classes=6, counts=(12, 4, 4), keep=[0, 1, 2])
    return write_npz(tmp_path / "sixmnist.npz", n_classes=6, counts=(12, 4, 4))


def test_episodes_are_reproducible_and_keep_groups_apart():
    targets = np.repeat([0, 1, 2], 20)
    groups = [f"p{i // 2}" for i in range(60)]  # two images per patient
    a = sample_episodes(targets, groups, [0, 1, 2], ways=2, shots=3, queries=5, episodes=20, seed=7)
    b = sample_episodes(targets, groups, [0, 1, 2], ways=2, shots=3, queries=5, episodes=20, seed=7)
    assert all(x[0] == y[0] and (x[1] == y[1]).all() and (x[2] == y[2]).all() for x, y in zip(a, b))
    for classes, support, query in a:
        assert len(classes) == 2 and len(support) == 6 and len(query) == 10
        assert not {groups[i] for i in support} & {groups[i] for i in query}
        assert set(targets[support]) == set(classes) == set(targets[query])
    c = sample_episodes(targets, groups, [0, 1, 2], ways=2, shots=3, queries=5, episodes=20, seed=8)
    assert any((x[1] != y[1]).any() for x, y in zip(a, c))


def test_trained_classes_are_excluded_or_refused():
    assert novel_classes(["a", "B", "c", "d"], ["b", "c"], None) == [0, 3]
    with pytest.raises(ConfigError, match="trained on"):
        novel_classes(["a", "b"], ["b"], ["b"])
    with pytest.raises(ConfigError, match="every class"):
        novel_classes(["a", "b"], ["A", "b"], None)


def test_fewshot_on_novel_classes_beats_chance(six_class_npz, tmp_path, capsys):
    raw = tiny_config(six_class_npz.parent, tmp_path / "runs", epochs=3)
    raw["data"]["source"]["flag"] = "threemnist"  # the first three classes only
    cfg = load_config(raw=raw)
    from hybridmednet.engine.trainer import train

    train(cfg, quiet=True)
    novel = load_config(raw=tiny_config(six_class_npz.parent, tmp_path / "other") | {"name": "six"})
    novel.data.source.flag = "sixmnist"
    result = fewshot_evaluate(cfg.run_dir, novel.data, ways=3, shots=[1, 5], queries=5, episodes=30, seed=0)
    assert result["classes"] == ["3", "4", "5"] and result["trained_classes"] == ["0", "1", "2"]
    assert set(result["results"]) == {f"{m}_{k}shot" for m in ("proto", "logreg", "finetune") for k in (1, 5)}
    five = result["results"]["proto_5shot"]
    assert five["acc"] > 0.45 and five["acc_ci95"][0] < five["acc"] < five["acc_ci95"][1]  # chance is 1/3
    saved = json.loads(open(result["out"]).read())
    assert saved["checkpoint_sha256"] and saved["results"] == result["results"]
    again = fewshot_evaluate(cfg.run_dir, novel.data, ways=3, shots=[1, 5], queries=5, episodes=30, seed=0)
    assert again["results"] == result["results"]  # same seed, same episodes, same numbers
    data_yaml = tmp_path / "six.yaml"
    data_yaml.write_text(yaml.safe_dump(novel.model_dump(mode="json")))
    assert main(["fewshot", str(cfg.run_dir), "--config", str(data_yaml), "--ways", "2", "--shots", "1",
                 "--episodes", "10", "--queries", "3", "--methods", "proto"]) == 0
    assert "proto_1shot" in capsys.readouterr().out
