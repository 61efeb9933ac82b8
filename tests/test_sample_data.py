"""Built-in sample data (from nilearn's wheel, no network) and the demo."""

import numpy as np

from l2s_gui.cli import main
from l2s_gui.io import check_pair
from l2s_gui.sample_data import load_sample, sample_paths


def test_sample_is_a_labelled_t1(tmp_path):
    sample = load_sample(tmp_path)
    check_pair(sample["scan"], sample["labels"])
    assert set(np.unique(sample["labels"].data)) == {0, 2, 3, 24}
    paths = sample_paths(tmp_path)
    assert len(paths["label_maps"]) == 4 and all(p.is_file() for p in paths["label_maps"])
    assert len(paths["real_images"]) == len(paths["real_labels"]) >= 2


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--steps", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "sample_seg.nii.gz" in out
    assert (tmp_path / "demo" / "sample_seg.nii.gz").is_file()
    assert (tmp_path / "demo" / "sample_volumes.csv").is_file()
    assert (tmp_path / "demo" / "run" / "model.safetensors").is_file()
