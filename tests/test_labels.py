"""Label tables: values <-> classes, merges, JSON, shipped tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from l2s_gui.errors import InputError
from l2s_gui.labels import LabelTable, freesurfer_names, load_label_table, shipped_tables, unique_values


def table() -> LabelTable:
    return LabelTable(values=[0, 2, 3, 17, 41], names=["background", "wm", "ctx", "hippo", "wm r"], name="t")


def test_round_trip_values_classes():
    t = table()
    arr = np.array([[0, 2, 3], [17, 41, 2]], dtype=np.int32)
    classes = t.to_classes(arr)
    assert classes.dtype == np.int64
    assert classes.tolist() == [[0, 1, 2], [3, 4, 1]]
    assert t.to_values(classes).tolist() == arr.tolist()
    assert t.n_classes == 5
    assert t.to_classes(arr.astype(np.float32)).tolist() == classes.tolist()


def test_unknown_values_error_names_file_and_values():
    t = table()
    arr = np.array([0, 2, 5, 99, 5, 3])
    with pytest.raises(InputError) as info:
        t.to_classes(arr, source="sub-01_labels.nii.gz")
    msg = str(info.value)
    assert msg.startswith("sub-01_labels.nii.gz: label values not in the label table 't': 5, 99")
    assert "\n" not in msg


def test_unknown_large_values_use_searchsorted():
    t = LabelTable(values=[0, 5, 2_000_000], names=["bg", "a", "b"])
    assert t.to_classes(np.array([2_000_000, 0, 5])).tolist() == [2, 0, 1]
    with pytest.raises(InputError, match="3000000"):
        t.to_classes(np.array([3_000_000, 5]))


def test_merge_and_unlisted():
    t = LabelTable(values=[0, 1, 2], names=["bg", "wm", "gm"], merge={2: 1, 41: 1, 3: 2, 42: 2})
    assert t.to_classes(np.array([0, 2, 41, 3, 42])).tolist() == [0, 1, 1, 2, 2]
    with pytest.raises(InputError, match="7"):
        t.to_classes(np.array([7, 2]), source="x")
    t2 = LabelTable(values=[0, 1, 2], names=["bg", "wm", "gm"], merge={2: 1, 3: 2}, unlisted="background")
    assert t2.to_classes(np.array([7, 2, 507, 3])).tolist() == [0, 1, 0, 2]
    # merge=False: table values only (the inverse of to_values)
    assert t2.to_classes(np.array([1, 2]), merge=False).tolist() == [1, 2]
    with pytest.raises(InputError):
        t2.to_classes(np.array([7]), merge=False)


def test_invalid_tables():
    with pytest.raises(InputError, match="first label must be 0"):
        LabelTable(values=[1, 2], names=["a", "b"])
    with pytest.raises(InputError, match="merge targets not in the table"):
        LabelTable(values=[0, 1], names=["a", "b"], merge={5: 9})
    with pytest.raises(InputError, match="2 values but 1 names"):
        LabelTable(values=[0, 1], names=["a"])
    with pytest.raises(InputError, match="listed twice"):
        LabelTable(values=[0, 1, 1], names=["a", "b", "c"])


def test_json_round_trip():
    t = LabelTable(values=[0, 1, 2], names=["bg", "wm", "gm"], merge={2: 1, 3: 2}, unlisted="background",
                   name="x", description="d")
    text = json.dumps(t.to_json())
    back = LabelTable.from_json(text)
    assert back == t and back.name == "x" and back.description == "d"
    assert LabelTable.from_json(t.to_json()) == t


def test_from_label_maps_union_and_names():
    a = np.array([[0, 2, 3]])
    b = np.array([[41, 42, 2]])
    t = LabelTable.from_label_maps([a, b])
    assert t.values == [0, 2, 3, 41, 42]
    assert t.names[0] == "background"
    assert t.names[1] == "Left-Cerebral-White-Matter" and t.names[4] == "Right-Cerebral-Cortex"
    t2 = LabelTable.from_label_maps([np.array([5, 7])])  # 0 always included, not FreeSurfer-like
    assert t2.values == [0, 5, 7] and t2.names == ["background", "label 5", "label 7"]


def test_unique_values():
    assert unique_values(np.array([5, 0, 5, 3], dtype=np.int32)).tolist() == [0, 3, 5]
    assert unique_values(np.array([-1, 2_000_000])).tolist() == [-1, 2_000_000]


def test_shipped_4class():
    assert "freesurfer_4class" in shipped_tables()
    t = load_label_table("freesurfer_4class")
    assert t.values == [0, 1, 2, 3, 4] and t.unlisted == "background"
    fs = {2: 1, 41: 1, 3: 2, 42: 2, 1017: 2, 10: 3, 17: 3, 53: 3, 60: 3, 4: 4, 43: 4, 14: 4, 24: 4,
          7: 0, 8: 0, 16: 0, 507: 0, 1: 0, 85: 0}
    got = t.to_classes(np.array(list(fs)))
    assert got.tolist() == list(fs.values())
    assert "cerebellum" in t.description.lower()


def test_freesurfer_names():
    names = freesurfer_names()
    assert names[17] == "Left-Hippocampus" and names[24] == "CSF" and 507 not in names


def test_load_label_table_errors(tmp_path):
    with pytest.raises(InputError, match="needs label maps"):
        load_label_table("auto")
    assert load_label_table("auto", [np.array([0, 4])]).values == [0, 4]
    with pytest.raises(InputError, match="'nosuch': not a shipped table"):
        load_label_table("nosuch")
    with pytest.raises(InputError, match=r"missing\.json: label table file not found"):
        load_label_table(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON"):
        load_label_table(str(bad))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"labels": [{"value": 3, "name": "x"}]}))
    with pytest.raises(InputError, match=r"wrong\.json: .*first label must be 0"):
        load_label_table(str(wrong))
    ok = tmp_path / "mine.json"
    ok.write_text(json.dumps({"labels": {"0": "bg", "7": "seven"}}))
    t = load_label_table(str(ok))
    assert t.values == [0, 7] and t.name == "mine"


# ------------------------------------------------------------------------------------------ left/right pairs
def test_lr_pairs_json_round_trip_and_flip():
    t = LabelTable(values=[0, 1, 2, 5], names=["bg", "l", "r", "mid"], lr_pairs=[[1, 2]], name="mine")
    data = json.loads(json.dumps(t.to_json()))
    assert data["lr_pairs"] == [[1, 2]]
    back = LabelTable.from_json(data)
    assert back == t and back.lr_pairs == [(1, 2)]
    assert back.flip_classes() == [0, 2, 1, 3]
    # an explicitly empty list: no sided class, the flip maps every class to itself
    assert LabelTable(values=[0, 1, 2], names=["bg", "a", "b"], lr_pairs=[]).flip_classes() == [0, 1, 2]
    # no lr_pairs stated: the JSON is unchanged (run folders and models written before keep matching)
    assert "lr_pairs" not in table().to_json()


@pytest.mark.parametrize("pairs,match", [([[1, 9]], "not in the table"), ([[1, 2], [2, 5]], "more than one pair"),
                                         ([[0, 1]], "two different non-background"), ([[1, 1]], "two different"),
                                         ([[1]], r"\[left value, right value\]")])
def test_invalid_lr_pairs(pairs, match):
    with pytest.raises(InputError, match=match):
        LabelTable(values=[0, 1, 2, 5], names=["bg", "l", "r", "mid"], lr_pairs=pairs)
    with pytest.raises(InputError, match="lr_pairs"):
        LabelTable.from_json({"labels": [{"value": 0}], "lr_pairs": {"1": 2}})


def test_lr_pairs_found_for_freesurfer_tables():
    # every side has its class: pairs swap, midline structures (24 CSF, 16 brain stem) map to themselves
    t = LabelTable.from_values([0, 2, 3, 16, 17, 24, 41, 42, 53, 1001, 2001])
    assert t.inferred_lr_pairs() == [(2, 41), (3, 42), (17, 53), (1001, 2001)]
    perm = t.flip_classes()
    assert [t.values[i] for i in perm] == [0, 41, 42, 16, 53, 24, 2, 3, 17, 2001, 1001]
    # one side only (a left structure without its right one): no valid flip
    assert LabelTable.from_values([0, 2, 3, 41]).flip_classes() is None
    assert LabelTable.from_values([0, 2, 17, 41]).flip_classes() is None
    # not FreeSurfer ids: nothing says which classes are sided
    assert LabelTable.from_values([0, 1, 5, 7]).flip_classes() is None
    # a merging table whose classes hold both hemispheres: every class maps to itself
    assert load_label_table("freesurfer_4class").flip_classes() == [0, 1, 2, 3, 4]
    assert load_label_table("mni152_tissues").flip_classes() == [0, 1, 2, 3]
    # merged per side: the merged classes swap
    side = LabelTable(values=[0, 1, 2], names=["bg", "left wm", "right wm"], merge={2: 1, 78: 1, 41: 2, 79: 2})
    assert side.flip_classes() == [0, 2, 1]
    # a merge that puts a left id with another class's right id is not a flip
    mixed = LabelTable(values=[0, 1, 2], names=["bg", "a", "b"], merge={2: 1, 41: 2, 3: 2, 42: 2})
    assert mixed.flip_classes() is None
