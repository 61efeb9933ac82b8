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


def test_sample_arrays_look_like_a_t1():
    from l2s_gui.sample_data import make_sample_arrays

    t1, labels, affine, _ = make_sample_arrays()
    assert t1.dtype == np.float32 and t1.shape == labels.shape and affine.shape == (4, 4)
    inside = labels > 0
    wm, gm, csf = ((labels == v).sum() / inside.sum() for v in (2, 3, 24))
    assert 0.2 < wm < 0.5 and 0.35 < gm < 0.7 and 0.03 < csf < 0.2
    means = [t1[labels == v].mean() for v in (2, 3, 24)]  # T1 contrast: WM > GM > CSF
    assert means[0] > means[1] > means[2]


def test_sample_written_once_and_maps_differ(tmp_path):
    from l2s_gui.io import load_label_map

    paths = sample_paths(tmp_path)
    labels = load_label_map(paths["labels"]).data
    maps = [load_label_map(p).data for p in paths["label_maps"]]
    for i, m in enumerate(maps):
        assert 0.01 < (m != labels).mean() < 0.4  # deformed, but still a brain
        assert all(not np.array_equal(m, other) for other in maps[:i])
    stamp = [p.stat().st_mtime_ns for p in paths["label_maps"]]
    again = sample_paths(tmp_path)
    assert again == paths and [p.stat().st_mtime_ns for p in again["label_maps"]] == stamp


def test_deformation_is_seeded():
    import torch

    from l2s_gui.sample_data import _deformation_grid

    a, b, c = (_deformation_grid((40, 44, 36), seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 40, 44, 36, 3) and float(a.abs().max()) < 1.5


def test_sample_config_gives_a_split(tmp_path):
    from l2s_gui.config import Config
    from l2s_gui.data import TrainingData
    from l2s_gui.sample_data import sample_config

    cfg = Config.from_dict(sample_config(tmp_path))
    # the demo starts from the starter model: its network, classes and voxel size
    assert cfg.training.init_from == "starter" and cfg.data.ndim == 2 and cfg.data.voxel_size == [2.0]
    assert cfg.network.widths == [16, 32, 64, 128] and cfg.network.norm == "instance"
    td = TrainingData.from_config(cfg.data, seed=0, need_label_maps=True, need_real=True, pad_multiple=8)
    assert (td.n_label_maps, td.n_train, td.n_val) == (4, 2, 1)
    assert td.table.values == [0, 1, 2, 3, 4] and all(s % 8 == 0 for s in td.spatial_shape)
    assert td.table.names == ["background", "white matter", "cortical grey matter", "subcortical grey matter",
                              "ventricles/CSF"]
    # the sample's ids 2 / 3 / 24 are white matter / cortical grey matter / CSF
    assert td.table.to_classes(np.array([0, 2, 3, 24])).tolist() == [0, 1, 2, 4]
