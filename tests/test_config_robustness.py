"""Bad config and dataset-description files fail with the file, line and problem
(duplicate keys, alias bombs, encodings, ``_BASE_`` types, broken folder descriptions)."""
import time

import pytest

from segkit.config import ConfigError, load_config
from segkit.data.catalog import DataError
from segkit.data.datasets.folder import read_dataset_description
from segkit.data.datasets.voc import read_split_list


def test_duplicate_top_level_key_is_refused_with_line(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("MODEL:\n  NUM_CLASSES: 7\nSOLVER:\n  MAX_ITER: 3\nMODEL:\n  DEVICE: cpu\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml, line 5: duplicate key 'MODEL' \(first defined on line 1\)"):
        load_config(str(f), load_plugins=False)


def test_duplicate_nested_key_is_refused(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("SOLVER:\n  MAX_ITER: 3\n  MAX_ITER: 4\n")
    with pytest.raises(ConfigError, match="line 3: duplicate key 'MAX_ITER'"):
        load_config(str(f), load_plugins=False)


def test_ordinary_anchors_still_work(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("DATASETS:\n  TRAIN: &tr [fashion_scenes_train]\n  TEST: *tr\n")
    cfg = load_config(str(f), load_plugins=False)
    assert list(cfg.DATASETS.TEST) == ["fashion_scenes_train"]


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    # 9**9 strings under DATASETS.TRAIN through the alias *x.
    body = "_X_: &x\n" + "\n".join("  " + x for x in lines) + "\nDATASETS:\n  TRAIN: *x\n"
    f = tmp_path / "bomb.yaml"
    f.write_text(body)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: YAML anchors/aliases expand to [\d,]+ values"):
        load_config(str(f), load_plugins=False)
    assert time.perf_counter() - start < 2.0  # refused before anything is expanded


@pytest.mark.parametrize("encoding, message", [("utf-16", "UTF-16-encoded; save it as UTF-8"),
                                               ("latin-1", r"not valid UTF-8: byte b'\\xe9' at line 2")])
def test_non_utf8_config_names_file_and_encoding(tmp_path, encoding, message):
    f = tmp_path / "enc.yaml"
    f.write_bytes("MODEL:\n  DEVICE: cpu  # café\n".encode(encoding))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(str(f), load_plugins=False)
    assert "enc.yaml" in str(info.value)


def test_utf8_bom_is_accepted(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbfSOLVER:\n  MAX_ITER: 7\n")
    assert load_config(str(f), load_plugins=False).SOLVER.MAX_ITER == 7


@pytest.mark.parametrize("base", ["5", "[base.yaml, 3]", "{a: b}", "''"])
def test_base_of_wrong_type_names_file(tmp_path, base):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  MAX_ITER: 7\n")
    f = tmp_path / "child.yaml"
    f.write_text(f"_BASE_: {base}\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: _BASE_ must be a file path or a list of file paths"):
        load_config(str(f), load_plugins=False)


def _desc(tmp_path, text, name="d.yaml"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


@pytest.mark.parametrize("text, message", [
    ("name: x\nclasses: [a, b]\nsplits: [train]\n", r"'splits' must map each split name"),
    ("name: x\nclasses: [a, b]\nsplits:\n  train: {images: im}\n", r"split 'train' lacks 'masks'"),
    ("name: x\nclasses: [a, b]\nsplits:\n  train: images\n", r"split 'train' must be a mapping"),
    (b"name: x\xe9\nclasses: [a]\nsplits: {}\n", r"not valid UTF-8"),
    ("name: x\nname: y\nclasses: [a]\nsplits: {}\n", r"line 2: duplicate key 'name'"),
])
def test_bad_folder_descriptions_name_file_and_problem(tmp_path, text, message):
    path = _desc(tmp_path, text)
    with pytest.raises(DataError, match=message) as info:
        read_dataset_description(path)
    assert "d.yaml" in str(info.value)


def test_broken_json_description_gives_line_and_column(tmp_path):
    path = _desc(tmp_path, '{"name": "x",\n "classes": [a]}', "d.json")
    with pytest.raises(DataError, match=r"d\.json: not valid JSON at line 2, column 14"):
        read_dataset_description(path)


def test_non_utf8_split_list_names_file_and_line(tmp_path):
    p = tmp_path / "train.txt"
    p.write_bytes(b"a\nb\xff\n")
    with pytest.raises(DataError, match=r"train\.txt: split list is not valid UTF-8 .* on line 2"):
        read_split_list(str(p))
