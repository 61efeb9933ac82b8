"""Volume I/O: every bad input is a one-line InputError naming the file; outputs never overwrite
inputs and existing files only when asked; geometry round trips exactly."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from l2s_gui.errors import InputError, OutputExistsError
from l2s_gui.io import check_pair, expand_paths, load_label_map, load_scan, save_volume
from l2s_gui.labels import LabelTable, load_label_table


def rotated_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ np.diag([0.9, 1.1, 1.7, 1.0])
    a[:3, 3] = [-40.5, 12.25, 7.0]
    return a


def save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_missing_unsupported_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="nope.nii.gz: file not found"):
        load_scan(tmp_path / "nope.nii.gz")
    (tmp_path / "scan.png").write_bytes(b"x")
    with pytest.raises(InputError, match="scan.png: unsupported file type"):
        load_scan(tmp_path / "scan.png")
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"not a nifti at all"))
    with pytest.raises(InputError, match="bad.nii.gz: cannot read"):
        load_scan(tmp_path / "bad.nii.gz")


def test_4d_images_nan_and_constant_scans(tmp_path):
    with pytest.raises(InputError, match="4D image with 3 volumes"):
        load_scan(save(tmp_path / "4d.nii.gz", np.random.rand(4, 4, 4, 3).astype(np.float32)))
    squeezed = load_scan(save(tmp_path / "4d1.nii.gz", np.random.rand(4, 4, 4, 1).astype(np.float32)))
    assert squeezed.shape == (4, 4, 4)
    bad = np.random.rand(4, 4, 4).astype(np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        load_scan(save(tmp_path / "nan.nii.gz", bad))
    bad[1, 1, 1] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        load_scan(save(tmp_path / "inf.nii.gz", bad))
    with pytest.raises(InputError, match="constant"):
        load_scan(save(tmp_path / "flat.nii.gz", np.ones((4, 4, 4), np.float32)))


def test_label_map_checks(tmp_path):
    with pytest.raises(InputError, match="scan.nii.gz: not a label map .*did you pass a scan"):
        load_label_map(save(tmp_path / "scan.nii.gz", np.random.rand(4, 4, 4).astype(np.float32)))
    with pytest.raises(InputError, match="empty"):
        load_label_map(save(tmp_path / "zero.nii.gz", np.zeros((4, 4, 4), np.int16)))
    with pytest.raises(InputError, match="negative"):
        load_label_map(save(tmp_path / "neg.nii.gz", -np.ones((4, 4, 4), np.int16)))
    stored_as_float = load_label_map(save(tmp_path / "f.nii.gz", np.full((4, 4, 4), 3.0, np.float32)))
    assert stored_as_float.data.dtype == np.int32


def test_pair_shape_and_affine_mismatch(tmp_path):
    scan = load_scan(save(tmp_path / "s.nii.gz", np.random.rand(6, 6, 6).astype(np.float32)))
    other = load_label_map(save(tmp_path / "l.nii.gz", np.ones((6, 6, 5), np.int16)))
    with pytest.raises(InputError, match="s.nii.gz .*l.nii.gz .*shapes differ"):
        check_pair(scan, other)
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    moved = load_label_map(save(tmp_path / "m.nii.gz", np.ones((6, 6, 6), np.int16), shifted))
    with pytest.raises(InputError, match="affines differ"):
        check_pair(scan, moved)


def test_labels_missing_from_a_table():
    table = LabelTable.from_values([0, 2, 3])
    with pytest.raises(InputError, match="subject.nii.gz: label values not in the label table.*41"):
        table.to_classes(np.array([0, 2, 41]), source="subject.nii.gz")
    merged = load_label_table("freesurfer_4class")
    classes = merged.to_classes(np.array([0, 2, 41, 3, 42, 17, 4, 530]))
    assert merged.to_values(classes).tolist()[:2] == [0, merged.to_values(classes)[1]]
    assert classes[1] == classes[2] and classes[3] == classes[4] and classes[-1] == 0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mgz"])
def test_round_trip_keeps_a_rotated_anisotropic_affine(tmp_path, suffix):
    affine = rotated_affine()
    labels = np.random.default_rng(0).integers(0, 50, (5, 6, 7)).astype(np.int32)
    labels[0, 0, 0] = 1
    source = load_label_map(save(tmp_path / "src.nii.gz", labels, affine))
    out = save_volume(tmp_path / f"out{suffix}", source.data, source)
    back = load_label_map(out)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)


def test_outputs_never_overwrite_inputs_nor_existing_files(tmp_path):
    src = save(tmp_path / "in.nii.gz", np.ones((4, 4, 4), np.int16))
    vol = load_label_map(src)
    with pytest.raises(OutputExistsError, match="inputs are never overwritten"):
        save_volume(src, vol.data, vol, overwrite=True)
    target = save_volume(tmp_path / "out.nii.gz", vol.data, vol)
    before = target.read_bytes()
    with pytest.raises(OutputExistsError, match="use --overwrite"):
        save_volume(target, vol.data * 2, vol)
    assert target.read_bytes() == before
    save_volume(target, vol.data * 2, vol, overwrite=True)
    assert load_label_map(target).data.max() == 2


def test_expand_paths(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.nii.gz", "a.mgz", "notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"")
    assert [p.name for p in expand_paths([str(tmp_path / "d")], "data.label_maps")] == ["a.mgz", "b.nii.gz"]
    with pytest.raises(InputError, match="data.label_maps: .*missing not found"):
        expand_paths([str(tmp_path / "missing")], "data.label_maps")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no"):
        expand_paths([str(tmp_path / "empty")], "data.label_maps")
