"""napari sample data: the engine's built-in T1 scan and its label map (MNI152 from nilearn's wheel,
written once to the user cache; no network). The layers carry the same geometry and metadata as
files opened with the reader, plus ``metadata["l2s_sample"]`` ("scan" / "labels"), by which the
training widget recognises the pair and fills its inputs."""

from __future__ import annotations

from ._nifti_layers import volume_to_layer_data

SAMPLE_KEY = "l2s_sample"


def make_sample_data() -> list:
    from l2s_gui.sample_data import sample_paths

    paths = sample_paths()
    scan_data, scan_kwargs, _ = volume_to_layer_data(paths["scan"])
    labels_data, labels_kwargs, _ = volume_to_layer_data(paths["labels"])
    scan_kwargs["name"] = "T1 (MNI152 sample)"
    labels_kwargs["name"] = "T1 labels (sample)"
    labels_kwargs["opacity"] = 0.5
    scan_kwargs["metadata"][SAMPLE_KEY] = "scan"
    labels_kwargs["metadata"][SAMPLE_KEY] = "labels"
    if labels_data.dtype.kind not in "iu":
        labels_data = labels_data.astype("int32")
    return [(scan_data, scan_kwargs, "image"), (labels_data, labels_kwargs, "labels")]
