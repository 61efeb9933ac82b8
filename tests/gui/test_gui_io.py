"""Reader/writer: NIfTI/MGZ -> Labels/Image layers with display geometry; exact round trip."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from l2s_gui.io import axis_aligned_transform as display_transform
from l2s_napari._reader import napari_get_reader


def _oblique_affine() -> np.ndarray:
    """Anisotropic voxels, a rotation about two axes and an offset (a non-trivial affine)."""
    a, b = np.deg2rad(12.0), np.deg2rad(-7.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 1.3, 2.1])
    affine[:3, 3] = [-91.5, 12.25, -40.0]
    return affine


@pytest.fixture
def oblique_files(tmp_path):
    rng = np.random.default_rng(3)
    affine = _oblique_affine()
    labels = np.zeros((20, 24, 16), np.int16)
    labels[4:16, 5:20, 3:12] = 2
    labels[8:12, 9:15, 5:9] = 41
    labels[2:5, 2:6, 2:5] = 1000
    scan = (rng.random((20, 24, 16)) * 300).astype(np.float32)
    lp, sp = tmp_path / "sub-01_aseg.nii.gz", tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), lp)
    nib.save(nib.Nifti1Image(scan, affine), sp)
    mgz = tmp_path / "scan_conformed.mgz"
    nib.save(nib.MGHImage(scan, affine), mgz)
    return {"labels": lp, "scan": sp, "mgz": mgz, "affine": affine, "labels_data": labels, "scan_data": scan}


def test_reader_layers_and_geometry(make_napari_viewer, oblique_files):
    viewer = make_napari_viewer()
    assert napari_get_reader(str(oblique_files["labels"])) is not None
    assert napari_get_reader("notes.txt") is None
    [labels] = viewer.open(str(oblique_files["labels"]), plugin="l2s-gui")
    [scan] = viewer.open(str(oblique_files["scan"]), plugin="l2s-gui")
    [mgz] = viewer.open(str(oblique_files["mgz"]), plugin="l2s-gui")
    assert type(labels).__name__ == "Labels" and type(scan).__name__ == "Image" and type(mgz).__name__ == "Image"
    # original label values, on-disk dtype
    np.testing.assert_array_equal(labels.data, oblique_files["labels_data"])
    assert labels.data.dtype == np.int16
    assert set(np.unique(labels.data)) == {0, 1000, 2, 41}
    # display: voxel sizes as scale, origin as translate; true affine kept in metadata
    affine = oblique_files["affine"]
    np.testing.assert_allclose(labels.scale, [0.9, 1.3, 2.1], atol=1e-6)
    np.testing.assert_allclose(labels.translate, affine[:3, 3], atol=1e-6)
    np.testing.assert_allclose(labels.metadata["affine"], affine, atol=1e-6)
    assert labels.metadata["source_path"].endswith("sub-01_aseg.nii.gz")
    np.testing.assert_allclose(scan.scale, labels.scale)
    np.testing.assert_allclose(mgz.metadata["affine"], affine, atol=1e-5)


def test_writer_round_trip_exact(make_napari_viewer, oblique_files, tmp_path):
    viewer = make_napari_viewer()
    [labels] = viewer.open(str(oblique_files["labels"]), plugin="l2s-gui")
    [scan] = viewer.open(str(oblique_files["scan"]), plugin="l2s-gui")
    out_l, out_s = tmp_path / "out" / "labels_copy.nii.gz", tmp_path / "out" / "scan_copy.nii"
    labels.save(str(out_l), plugin="l2s-gui")
    scan.save(str(out_s), plugin="l2s-gui")
    for out, ref, dtype in ((out_l, oblique_files["labels_data"], np.int16),
                            (out_s, oblique_files["scan_data"], np.float32)):
        img = nib.load(str(out))
        np.testing.assert_allclose(img.affine, oblique_files["affine"], atol=1e-5)
        data = np.asanyarray(img.dataobj)
        assert data.dtype == dtype
        np.testing.assert_array_equal(data, ref)
    # and back through the reader: the same layers
    [again] = viewer.open(str(out_l), plugin="l2s-gui")
    np.testing.assert_array_equal(again.data, labels.data)
    np.testing.assert_allclose(again.metadata["affine"], labels.metadata["affine"], atol=1e-5)


def test_writer_without_metadata_uses_scale_translate(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), scale=(2, 3, 4), translate=(1, 2, 3))
    out = tmp_path / "painted.nii.gz"
    layer.save(str(out), plugin="l2s-gui")
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine[:3, :3], np.diag([2, 3, 4]))
    np.testing.assert_allclose(img.affine[:3, 3], [1, 2, 3])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), layer.data)


def test_unreadable_file_is_a_clear_error(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    with pytest.raises(Exception, match="broken.nii.gz"):
        viewer.open(str(bad), plugin="l2s-gui")
    assert len(viewer.layers) == 0
    viewer.add_image(np.zeros((4, 4)))  # still usable
    assert len(viewer.layers) == 1


def test_display_transform():
    """(The labels-vs-scan heuristics are engine code: tests/test_run_inputs.py.)"""
    scale, translate = display_transform(np.diag([2.0, 3.0, 4.0, 1.0]))
    assert scale == [2.0, 3.0, 4.0] and translate == [0.0, 0.0, 0.0]
