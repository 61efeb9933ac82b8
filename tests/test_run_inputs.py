"""Start-time checks and writing of a GUI-started run's inputs (l2s_gui.run_inputs), headless."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import yaml

from l2s_gui.errors import L2SError, OutputExistsError
from l2s_gui.io import looks_like_labels, read_volume, write_volume
from l2s_gui.run_inputs import ArrayVolume, missing_inputs, pair_problem, prepare_run_inputs

AFFINE = np.diag([1.2, 1.0, 1.1, 1.0])


def _pair(shape=(12, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, shape).astype(np.int16) * 7
    scan = (labels * 10 + rng.random(shape) * 5).astype(np.float32)
    return ArrayVolume(scan, AFFINE, "sub0 T1"), ArrayVolume(labels, AFFINE, "sub0 labels")


def test_pairs_and_label_maps_are_checked_before_anything_is_written(tmp_path):
    scan, labels = _pair()
    assert pair_problem(scan, labels) == ""
    small = ArrayVolume(np.ones((4, 4, 4), np.int32), AFFINE, "small")
    assert "shapes differ" in pair_problem(scan, small)
    assert "not a label map" in pair_problem(scan, ArrayVolume(scan.data, AFFINE, "float"))
    assert "different layers" in pair_problem(labels, labels)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="layer 'neg' is not a label map .negative"):
        prepare_run_inputs(run, {}, [ArrayVolume(-np.ones((4, 4, 4), np.int32), AFFINE, "neg")], [(scan, labels)])
    with pytest.raises(L2SError, match="steps"):  # a bad setting is named, no placeholder paths involved
        prepare_run_inputs(run, {"training": {"steps": -1}}, [labels], [(scan, labels)])
    with pytest.raises(ValueError, match="real scan"):
        prepare_run_inputs(run, {}, [labels], [])
    assert not run.exists()
    assert missing_inputs("synthseg", 1, 0) == "" and "label map" in missing_inputs("synthseg", 0, 5)


def test_inputs_are_written_with_their_geometry_and_listed_in_the_config(tmp_path):
    scan, labels = _pair()
    on_disk = tmp_path / "extra_labels.nii.gz"
    nib.save(nib.Nifti1Image(labels.data, AFFINE), on_disk)
    run = tmp_path / "run"
    config_path = prepare_run_inputs(run, {"network": {"widths": [4, 8]}}, [labels, on_disk], [(scan, labels)])
    cfg = yaml.safe_load(config_path.read_text())
    assert cfg["network"]["widths"] == [4, 8]
    maps = cfg["data"]["label_maps"]
    assert maps[1] == str(on_disk.resolve()) and "synth_000_sub0_labels" in maps[0]
    back = read_volume(cfg["data"]["real_labels"][0])
    np.testing.assert_array_equal(back.data, labels.data)
    np.testing.assert_allclose(back.affine, AFFINE)
    assert read_volume(cfg["data"]["real_images"][0]).data.dtype == np.float32
    # a second start in the same folder: refused (it holds a run's inputs and more now)
    (run / "state.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="not empty"):
        prepare_run_inputs(run, {}, [labels], [(scan, labels)])


def test_labels_or_scan_and_the_viewer_io_round_trip(tmp_path):
    t1_uint8 = np.random.default_rng(0).integers(0, 256, (30, 30, 30)).astype(np.uint8)
    assert not looks_like_labels(t1_uint8)
    assert looks_like_labels(t1_uint8, "sub-01_aseg.nii.gz")
    assert not looks_like_labels(np.full((4, 4), 0.5, np.float32), "seg.nii")
    sparse = np.zeros((10, 10, 10), np.int32)
    sparse[:5] = 2
    sparse[5:, :3] = 41
    assert looks_like_labels(sparse)
    # write_volume keeps integer label values and their dtype; a path without suffix gets .nii.gz
    labels = np.zeros((6, 5, 4), np.int16)
    labels[1:3] = 1000
    out = write_volume(tmp_path / "painted", labels, AFFINE)
    assert out.name == "painted.nii.gz"
    back = read_volume(out)
    assert back.data.dtype == np.int16 and np.array_equal(back.data, labels)
    assert not list(tmp_path.glob(".*"))  # no temporary file left
