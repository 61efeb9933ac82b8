"""Shared fixtures: a small generated dataset of label maps and real (scan, labels) pairs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from helpers import blob_labels


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "maps").mkdir()
    (root / "images").mkdir()
    (root / "labels").mkdir()
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = blob_labels((24, 24, 24), i)
        nib.save(nib.Nifti1Image(lab, affine), root / "maps" / f"map{i}.nii.gz")
    for i in range(3):
        lab = blob_labels((24, 24, 24), 10 + i)
        means = {0: 0.0, 2: 0.8, 3: 0.5, 4: 0.2, 17: 0.6}
        img = np.vectorize(means.get)(lab).astype(np.float32) + 0.05 * rng.standard_normal(lab.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(img, affine), root / "images" / f"s{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labels" / f"s{i}.nii.gz")
    return root


