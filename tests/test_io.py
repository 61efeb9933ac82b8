"""Volume I/O: every bad input is a one-line InputError naming the file; outputs never overwrite
inputs and existing files only when asked; geometry round trips exactly."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from l2s_gui.errors import InputError, OutputExistsError
from l2s_gui.io import (
    Volume,
    check_pair,
    expand_paths,
    from_ras,
    load_label_map,
    load_scan,
    load_volume,
    save_volume,
    strip_suffix,
    to_ras,
)
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


# ------------------------------------------------------------------------------------------ more cases
def _aniso_affine() -> np.ndarray:
    """Anisotropic voxels (0.9 x 1.2 x 2.5 mm), rotated about two axes, non-zero origin."""
    a, b = np.radians(20), np.radians(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.9, 1.2, 2.5])
    aff[:3, 3] = [-40.5, 12.25, 30.0]
    return aff


def _labels(shape=(12, 10, 8)) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    lab[2:9, 2:8, 2:6] = 2
    lab[4:7, 4:6, 3:5] = 17
    lab[0, 0, 0] = 300
    return lab


def _scan(shape=(12, 10, 8)) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)


def _write(path, data, affine=None):
    affine = np.eye(4) if affine is None else affine
    if str(path).endswith(".mgz"):
        nib.save(nib.MGHImage(data, affine), str(path))
    else:
        nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.mark.parametrize("name,content", [("g.nii.gz", b"not an image" * 10), ("g.nii", b"\x00" * 20),
                                          ("g.mgz", b"nonsense")])
def test_unreadable_files_one_line(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_scan(p)
    assert str(info.value).startswith(str(p)) and "cannot read" in str(info.value) and "\n" not in str(info.value)


def test_truncated_file(tmp_path):
    p = _write(tmp_path / "full.nii.gz", _scan((30, 30, 30)))
    data = gzip.decompress(p.read_bytes())
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(InputError, match=r"cut\.nii\.gz: cannot read"):
        load_scan(bad)


def test_trailing_singleton_squeezed_2d_is_one_slice_5d_refused(tmp_path):
    assert load_scan(_write(tmp_path / "one.nii.gz", _scan((5, 6, 7))[..., None])).data.shape == (5, 6, 7)
    assert load_scan(_write(tmp_path / "flat.nii.gz", _scan((5, 6, 7))[..., 0])).data.shape == (5, 6, 1)
    with pytest.raises(InputError, match=r"vec\.nii\.gz: .*give one 3D volume"):
        load_volume(_write(tmp_path / "vec.nii.gz", np.zeros((4, 4, 4, 2, 3), np.float32)))


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_scans(tmp_path, bad):
    data = _scan()
    data[3, 3, 3] = bad
    with pytest.raises(InputError, match=r"bad\.nii\.gz: contains NaN or Inf values"):
        load_scan(_write(tmp_path / "bad.nii.gz", data))


def test_label_map_dtypes_and_negative_values(tmp_path):
    vol = load_label_map(_write(tmp_path / "lab.nii.gz", _labels().astype(np.float32)))
    assert vol.data.dtype == np.int32 and np.array_equal(vol.data, _labels())
    neg = _labels()
    neg[0, 0, 1] = -1
    with pytest.raises(InputError, match=r"neg\.nii\.gz: label map has negative values"):
        load_label_map(_write(tmp_path / "neg.nii.gz", neg))
    assert load_scan(_write(tmp_path / "i16.nii.gz", (_scan() * 10).astype(np.int16))).data.dtype == np.float32


def test_pair_nifti_and_mgz_on_the_same_grid(tmp_path):
    aff = _aniso_affine()
    check_pair(load_scan(_write(tmp_path / "s.nii.gz", _scan(), aff)),
               load_label_map(_write(tmp_path / "l.mgz", _labels(), aff)))
    v = Volume(np.zeros((2, 2, 2)), aff)
    assert np.allclose(v.zooms, (0.9, 1.2, 2.5)) and np.isclose(v.voxel_volume_mm3, 0.9 * 1.2 * 2.5)


@pytest.mark.parametrize("src_ext", [".nii.gz", ".mgz"])
@pytest.mark.parametrize("out_ext", [".nii.gz", ".nii", ".mgz"])
def test_round_trip_across_formats(tmp_path, src_ext, out_ext):
    src = load_scan(_write(tmp_path / f"scan{src_ext}", _scan(), _aniso_affine()))
    out = save_volume(tmp_path / f"seg{out_ext}", _labels(), like=src)
    back = load_label_map(out)
    assert np.array_equal(back.data, _labels()) and np.allclose(back.affine, src.affine, atol=1e-4)
    assert np.allclose(back.zooms, (0.9, 1.2, 2.5), atol=1e-5)
    img = nib.load(str(out))
    assert np.issubdtype(img.get_data_dtype(), np.integer)
    if out_ext != ".mgz":
        assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    out2 = save_volume(tmp_path / f"img{out_ext}", src.data, like=src)  # float data: float32, exact
    assert nib.load(str(out2)).get_data_dtype().newbyteorder("=") == np.dtype(np.float32)
    assert np.array_equal(load_scan(out2).data, src.data)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_save_keeps_nifti_codes_and_wide_labels(tmp_path):
    aff = _aniso_affine()
    img = nib.Nifti1Image(_scan(), aff)
    img.set_sform(aff, code=2)
    img.set_qform(aff, code=1)
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    src = load_scan(tmp_path / "scan.nii.gz")
    out = nib.load(str(save_volume(tmp_path / "seg.nii.gz", _labels(), like=src)))
    assert int(out.header["sform_code"]) == 2 and int(out.header["qform_code"]) == 1
    assert out.header.get_xyzt_units()[0] == "mm"
    wide = _labels()
    wide[1, 1, 1] = 2035
    for ext in (".nii.gz", ".mgz"):
        assert np.array_equal(load_label_map(save_volume(tmp_path / f"w{ext}", wide, like=src)).data, wide)


def test_never_overwrites_the_reference_or_another_spelling(tmp_path):
    scan_path = _write(tmp_path / "scan.nii.gz", _scan())
    lab_path = _write(tmp_path / "lab.nii.gz", _labels())
    src = load_scan(scan_path)
    before = (scan_path.read_bytes(), lab_path.read_bytes())
    with pytest.raises(OutputExistsError, match="is one of the inputs"):
        save_volume(scan_path, _labels(), like=src, overwrite=True)
    with pytest.raises(OutputExistsError, match="is one of the inputs"):
        save_volume(tmp_path / "sub" / ".." / "lab.nii.gz", _labels(), like=src, overwrite=True, inputs=[str(lab_path)])
    assert (scan_path.read_bytes(), lab_path.read_bytes()) == before
    with pytest.raises(InputError, match=r"seg\.tif: unsupported output type"):
        save_volume(tmp_path / "seg.tif", _labels(), like=src)


def test_output_permissions_follow_umask(tmp_path):
    src = load_scan(_write(tmp_path / "scan.nii.gz", _scan()))
    out = save_volume(tmp_path / "new" / "seg.nii.gz", _labels(), like=src)
    mask = os.umask(0o022)
    os.umask(mask)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_expand_paths_order_and_errors(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("b.nii.gz", "a.mgz", "c.nii", "notes.txt"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "z.nii.gz"
    single.write_bytes(b"x")
    got = expand_paths([str(single), str(folder), str(folder / "a.mgz")], "data.real_images")
    assert [p.name for p in got] == ["z.nii.gz", "a.mgz", "b.nii.gz", "c.nii"]  # folders sorted, no duplicates
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"data\.label_maps: folder .*empty holds no \.nii"):
        expand_paths([str(tmp_path / "empty")], "data.label_maps")
    with pytest.raises(InputError, match=r"notes\.txt: unsupported file type"):
        expand_paths([str(folder / "notes.txt")], "inputs")


def test_strip_suffix_and_ras_round_trip():
    assert strip_suffix("/a/sub-01_T1w.nii.gz") == "sub-01_T1w" and strip_suffix("x.y.mgz") == "x.y"
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    aff = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -3], [0, -1, 0, 7], [0, 0, 0, 1]])
    ras, aff_ras, start = to_ras(data, aff)
    assert nib.aff2axcodes(aff_ras) == ("R", "A", "S") and ras.shape == (4, 2, 3)
    assert np.array_equal(from_ras(ras, start), data)
    world = aff @ [1, 2, 3, 1]  # every voxel keeps its world position
    idx = np.round(np.linalg.solve(aff_ras, world)).astype(int)[:3]
    assert ras[tuple(idx)] == data[1, 2, 3]
