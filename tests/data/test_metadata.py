import pytest

from hybridmednet.config.schema import SubgroupConfig
from hybridmednet.data.metadata import load_subgroup_values
from hybridmednet.errors import DataError


def test_values_are_matched_to_ids_through_a_join(tmp_path):
    (tmp_path / "split.csv").write_text("split,index,image_id\ntest,0,A\ntest,1,B\ntrain,0,C\n")
    (tmp_path / "meta.csv").write_text("image_id,sex,age\nA,male,55\nB,female,\nC,unknown,30\n")
    cfg = SubgroupConfig(path=str(tmp_path / "split.csv"), id_template="{split}/{index}", join_path=str(tmp_path / "meta.csv"),
                         join_on="image_id", columns={"sex": "sex", "age": "age"})
    values = load_subgroup_values(cfg, ["test/1", "train/0", "test/0", "val/9"])
    assert values == {"sex": ["female", None, "male", None], "age": [None, "30", "55", None]}


def test_missing_column_is_named(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,sex\nA,male\n")
    cfg = SubgroupConfig(path=str(tmp_path / "m.csv"), id_template="{image_id}", columns={"site": "localization"})
    with pytest.raises(DataError, match=r"no column\(s\) \['localization'\]"):
        load_subgroup_values(cfg, ["A"])


def test_a_missing_table_offers_going_without_it_only_where_the_config_allows(tmp_path):
    from hybridmednet.data.metadata import load_metadata_rows

    cfg = SubgroupConfig(path=str(tmp_path / "absent.csv"), id_template="{image_id}", columns={"sex": "sex"})
    with pytest.raises(DataError, match=r"absent\.csv: metadata CSV not found; fix eval\.subgroups\.path, or go "
                                        r"without the table \(--set eval\.subgroups=null\)"):
        load_subgroup_values(cfg, ["A"])
    with pytest.raises(DataError, match=r"fix data\.clinical\.table\.path$"):  # a clinical model needs its table
        load_metadata_rows(cfg, ["A"], ["sex"], key="data.clinical.table")
