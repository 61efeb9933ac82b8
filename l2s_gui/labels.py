"""Label tables: original label values <-> contiguous class indices, with names and merges.

A :class:`LabelTable` lists the label *values* the network predicts; class ``i`` stands for value
``values[i]`` and ``values[0]`` is always 0 (background). Training and segmentation work on class
indices ``0..C-1``; original values only appear at the I/O boundary.

An optional ``merge`` map sends original values (e.g. FreeSurfer ids) to table values (e.g. the four
tissue classes of ``freesurfer_4class``). When converting a label map, a value found in ``merge`` is
merged; otherwise a value listed in the table maps to its own class; any other value is an error,
unless the table says ``"unlisted": "background"`` (then it becomes background).

JSON format (``to_json`` / ``from_json``; shipped tables in ``resources/label_tables``)::

    {"format": "l2s-label-table", "version": 1, "name": "...", "description": "...",
     "labels": [{"value": 0, "name": "background"}, {"value": 1, "name": "white matter"}, ...],
     "merge": {"2": 1, "41": 1, ...},          # optional: original value -> table value
     "unlisted": "error" | "background",       # optional, default "error"
     "lr_pairs": [[2, 41], [3, 42], ...]}      # optional: [left, right] table values

Left/right pairs (``lr_pairs``) tell segmentation how to swap the classes of a left/right flipped
pass (:meth:`LabelTable.flip_classes`). A flip is valid when every class maps to itself or to its
pair: listed pairs swap, every other class maps to itself, so ``"lr_pairs": []`` says "no class is
one-sided" (hemisphere-free tissues, or classes that merge both hemispheres) and flips with the
identity. A table that does not list ``lr_pairs`` gets them from its values when they (or, for a
merging table, the original values merged into each class) are FreeSurfer ids: pairs of the shipped
FreeSurfer L/R list (``freesurfer_names.json``) whose two sides are separate classes swap, classes
holding both sides of their ids (``freesurfer_4class``) map to themselves; a one-sided class whose
other side is not a class of its own (e.g. left structures only) makes the flip invalid, as does a
table whose values are not FreeSurfer ids (nothing says which classes are sided). Found pairs are
not written into the table's JSON (``auto`` tables, run folders and models written before keep
their exact JSON); state ``lr_pairs`` in a JSON table to fix them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

FORMAT = "l2s-label-table"
FORMAT_VERSION = 1
_LUT_MAX = 1 << 20  # use a direct look-up table for non-negative values below this

__all__ = ["LabelTable", "load_label_table", "shipped_tables", "unique_values", "freesurfer_names",
           "freesurfer_lr_pairs"]


def _examples(values: Iterable[Any], n: int = 8) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:n])
    return text + (f" (and {len(values) - n} more)" if len(values) > n else "")


def unique_values(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (bincount when the range is small: fast)."""
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi < _LUT_MAX:
            counts = np.bincount(arr.ravel().astype(np.intp, copy=False), minlength=hi + 1)
            return np.flatnonzero(counts).astype(np.int64)
    return np.unique(arr).astype(np.int64)


def freesurfer_names() -> dict[int, str]:
    """value -> name for common FreeSurfer label ids (shipped ``freesurfer_names.json``)."""
    text = resources.files("l2s_gui.resources").joinpath("label_tables/freesurfer_names.json").read_text()
    data = json.loads(text)
    return {int(k): str(v) for k, v in data["names"].items()}


def freesurfer_lr_pairs() -> list[tuple[int, int]]:
    """[(left id, right id), ...] of FreeSurfer ids (shipped ``freesurfer_names.json``)."""
    return list(_freesurfer_lr_pairs())


@functools.lru_cache(maxsize=1)
def _freesurfer_lr_pairs() -> tuple[tuple[int, int], ...]:
    text = resources.files("l2s_gui.resources").joinpath("label_tables/freesurfer_names.json").read_text()
    return tuple((int(a), int(b)) for a, b in json.loads(text).get("lr_pairs", []))


def _looks_like_freesurfer(values: Iterable[int]) -> bool:
    vals = set(int(v) for v in values)
    return {2, 3} <= vals or {41, 42} <= vals


@dataclass
class LabelTable:
    """Original label values <-> contiguous classes (class ``i`` is value ``values[i]``)."""

    values: list[int]
    names: list[str]
    merge: dict[int, int] = field(default_factory=dict)
    unlisted: str = "error"  # "error" | "background"
    name: str = ""
    description: str = ""
    lr_pairs: list[tuple[int, int]] | None = None  # [left, right] table values; None: not stated

    def __post_init__(self) -> None:
        where = f"label table {self.name!r}" if self.name else "label table"
        self.values = [int(v) for v in self.values]
        self.names = [str(n) for n in self.names]
        self.merge = {int(k): int(v) for k, v in (self.merge or {}).items()}
        if not self.values or self.values[0] != 0:
            raise InputError(f"{where}: the first label must be 0 (background), got {self.values[:1]}")
        if len(set(self.values)) != len(self.values):
            dup = sorted({v for v in self.values if self.values.count(v) > 1})
            raise InputError(f"{where}: label values listed twice: {_examples(dup)}")
        if any(v < 0 for v in self.values):
            raise InputError(f"{where}: label values must be >= 0")
        if len(self.names) != len(self.values):
            raise InputError(f"{where}: {len(self.values)} values but {len(self.names)} names")
        bad = sorted({v for v in self.merge.values() if v not in set(self.values)})
        if bad:
            raise InputError(f"{where}: merge targets not in the table: {_examples(bad)}")
        if self.unlisted not in ("error", "background"):
            raise InputError(f"{where}: 'unlisted' must be 'error' or 'background', got {self.unlisted!r}")
        if self.lr_pairs is not None:
            self.lr_pairs = [self._check_pair(p, where) for p in self.lr_pairs]
            sided = [v for p in self.lr_pairs for v in p]
            twice = sorted({v for v in sided if sided.count(v) > 1})
            if twice:
                raise InputError(f"{where}: lr_pairs: values in more than one pair: {_examples(twice)}")
        # sorted keys -> class, for the vectorised look-up
        mapping = {v: i for i, v in enumerate(self.values)}
        index_of = dict(mapping)
        for src, dst in self.merge.items():
            mapping[src] = index_of[dst]
        self._keys = np.array(sorted(mapping), dtype=np.int64)
        self._classes = np.array([mapping[k] for k in self._keys], dtype=np.int64)
        self._value_keys = np.array(sorted(index_of), dtype=np.int64)
        self._value_classes = np.array([index_of[k] for k in self._value_keys], dtype=np.int64)

    def _check_pair(self, pair: Any, where: str) -> tuple[int, int]:
        try:
            left, right = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise InputError(f"{where}: lr_pairs: each pair must be [left value, right value], got {pair!r}") from None
        missing = [v for v in (left, right) if v not in self.values]
        if missing:
            raise InputError(f"{where}: lr_pairs: {pair!r}: values not in the table: {_examples(missing)}")
        if left == right or 0 in (left, right):
            raise InputError(f"{where}: lr_pairs: {pair!r}: a pair holds two different non-background values")
        return left, right

    # ------------------------------------------------------------------ basics
    @property
    def n_classes(self) -> int:
        return len(self.values)

    def name_of(self, value: int) -> str:
        return self.names[self.values.index(int(value))]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelTable):
            return NotImplemented
        return (self.values, self.names, self.merge, self.unlisted, self.lr_pairs) == (
            other.values, other.names, other.merge, other.unlisted, other.lr_pairs)

    # ------------------------------------------------------------------ left/right
    def _class_of(self, value: int) -> int | None:
        """The class an original label value is converted to (None: unknown to the table)."""
        pos = int(np.searchsorted(self._keys, value))
        if pos < len(self._keys) and int(self._keys[pos]) == value:
            return int(self._classes[pos])
        return 0 if self.unlisted == "background" else None

    def inferred_lr_pairs(self) -> list[tuple[int, int]] | None:
        """``lr_pairs`` when stated, else the pairs found from FreeSurfer ids (module docstring);
        None when the table does not say which classes are sided and they cannot be found."""
        if self.lr_pairs is not None:
            return list(self.lr_pairs)
        sources: list[set[int]] = [set() for _ in self.values]
        for i, v in enumerate(self.values):
            if not self.merge:  # a merging table's own values are its output ids: its merges say the sides
                sources[i].add(v)
        for src, dst in self.merge.items():
            sources[self.values.index(dst)].add(src)
        found = set().union(*sources[1:]) if len(sources) > 1 else set()
        partner: dict[int, int] = {}
        for left, right in freesurfer_lr_pairs():
            partner[left], partner[right] = right, left
        if not (_looks_like_freesurfer(found) or any(partner.get(v) in found for v in found)):
            return None  # not FreeSurfer ids: nothing says which classes are sided
        perm = list(range(self.n_classes))
        for i in range(1, self.n_classes):
            sided = [s for s in sources[i] if s in partner]
            if not sided:
                continue  # midline or unsided ids only: maps to itself
            targets = {self._class_of(partner[s]) for s in sided}
            if len(targets) != 1 or None in targets or 0 in targets:
                return None  # a side without its other side (or split over several classes)
            perm[i] = targets.pop()  # type: ignore[assignment]  # None is excluded above
        if any(perm[perm[i]] != i for i in range(self.n_classes)):
            return None
        return [(self.values[i], self.values[j]) for i, j in enumerate(perm) if i < j]

    def flip_classes(self) -> list[int] | None:
        """The class permutation of a left/right flip (class ``i`` of the flipped image is class
        ``flip_classes()[i]`` of the original), or None when the table does not allow a flip."""
        pairs = self.inferred_lr_pairs()
        if pairs is None:
            return None
        perm = list(range(self.n_classes))
        for left, right in pairs:
            a, b = self.values.index(left), self.values.index(right)
            perm[a], perm[b] = b, a
        return perm

    # ------------------------------------------------------------------ conversion
    def to_classes(self, arr: np.ndarray, source: str | Path | None = None, merge: bool = True) -> np.ndarray:
        """Original label values -> class indices (int64), vectorised.

        ``merge=False`` converts *table values* only (the inverse of :meth:`to_values`), e.g. to
        measure a segmentation written by this tool. Raises :class:`InputError` naming ``source``
        and the unknown values when some values are not in the table (and not merged).
        """
        arr = np.asarray(arr)
        keys, classes = (self._keys, self._classes) if merge else (self._value_keys, self._value_classes)
        unlisted_ok = merge and self.unlisted == "background"
        if arr.size == 0:
            return np.zeros(arr.shape, dtype=np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            rounded = np.round(arr)
            if not np.array_equal(rounded, arr):
                raise InputError(f"{source or 'label map'}: not a label map (non-integer values)")
            arr = rounded.astype(np.int64)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi < _LUT_MAX:
            lut = np.full(hi + 1, -1, dtype=np.int64)
            inside = keys <= hi
            lut[keys[inside]] = classes[inside]
            out = lut[arr]
            unknown_mask = out < 0
        else:
            pos = np.clip(np.searchsorted(keys, arr), 0, len(keys) - 1)
            found = keys[pos] == arr
            out = np.where(found, classes[pos], -1)
            unknown_mask = ~found
        if unknown_mask.any():
            if unlisted_ok:
                out[unknown_mask] = 0
            else:
                unknown = unique_values(arr[unknown_mask])
                where = source if source is not None else "label map"
                table = f"the label table {self.name!r}" if self.name else "the label table"
                raise InputError(f"{where}: label values not in {table}: {_examples(unknown.tolist())}; "
                                 f"use a table that lists them (or label_table: auto)")
        return out

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """Class indices -> table values (int32)."""
        classes = np.asarray(classes)
        if classes.size and (int(classes.min()) < 0 or int(classes.max()) >= self.n_classes):
            raise ValueError(f"class indices must be in [0, {self.n_classes - 1}]")
        return np.asarray(self.values, dtype=np.int32)[classes.astype(np.intp, copy=False)]

    # ------------------------------------------------------------------ (de)serialisation
    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible mapping (``json.dumps`` it to write a file)."""
        out: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name,
                               "description": self.description,
                               "labels": [{"value": v, "name": n} for v, n in zip(self.values, self.names)]}
        if self.merge:
            out["merge"] = {str(k): v for k, v in sorted(self.merge.items())}
        out["unlisted"] = self.unlisted
        if self.lr_pairs is not None:
            out["lr_pairs"] = [[a, b] for a, b in self.lr_pairs]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | str, source: str | Path | None = None) -> LabelTable:
        """From a mapping as written by :meth:`to_json` (or its JSON text)."""
        where = str(source) if source is not None else "label table"
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise InputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "labels" not in data:
            raise InputError(f"{where}: not a label table (expected a JSON object with a 'labels' list)")
        try:
            labels = data["labels"]
            if isinstance(labels, dict):  # {"0": "background", ...} is accepted too
                items = [(int(k), str(v)) for k, v in labels.items()]
            else:
                items = [(int(e["value"]), str(e.get("name", f"label {e['value']}"))) for e in labels]
            merge = {int(k): int(v) for k, v in (data.get("merge") or {}).items()}
            lr_pairs = data.get("lr_pairs")
            if lr_pairs is not None and not isinstance(lr_pairs, list):
                raise TypeError("lr_pairs must be a list of [left, right] pairs")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InputError(f"{where}: malformed label table ({type(exc).__name__}: {exc}); "
                             f"expected labels: [{{\"value\": 0, \"name\": \"background\"}}, ...]") from None
        try:
            return cls(values=[v for v, _ in items], names=[n for _, n in items], merge=merge,
                       unlisted=str(data.get("unlisted", "error")), name=str(data.get("name", "")),
                       description=str(data.get("description", "")), lr_pairs=lr_pairs)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_values(cls, values: Iterable[int], name: str = "auto") -> LabelTable:
        """Every value becomes a class (0 always included); FreeSurfer-looking values get names."""
        vals = sorted(set(int(v) for v in values) | {0})
        lookup = freesurfer_names() if _looks_like_freesurfer(vals) else {}
        names = ["background" if v == 0 else lookup.get(v, f"label {v}") for v in vals]
        return cls(values=vals, names=names, name=name,
                   description="every label value found in the training label maps is a class")

    @classmethod
    def from_label_maps(cls, arrays: Sequence[np.ndarray]) -> LabelTable:
        """The sorted union of the values found in ``arrays`` (0 always included)."""
        found: set[int] = set()
        for arr in arrays:
            found.update(unique_values(arr).tolist())
        return cls.from_values(found)


def shipped_tables() -> list[str]:
    """Names of the label tables shipped in ``resources/label_tables`` (except the name lookup)."""
    folder = resources.files("l2s_gui.resources").joinpath("label_tables")
    return sorted(p.name[:-5] for p in folder.iterdir()
                  if p.name.endswith(".json") and p.name != "freesurfer_names.json")


def load_label_table(spec: str, arrays: Sequence[np.ndarray] | None = None) -> LabelTable:
    """'auto' (union of the values in ``arrays``), a shipped table name, or a JSON file path."""
    spec = str(spec)
    if spec == "auto":
        if arrays is None:
            raise InputError("label_table 'auto' needs label maps to read the label values from")
        return LabelTable.from_label_maps(arrays)
    looks_like_path = spec.endswith(".json") or "/" in spec or "\\" in spec
    if not looks_like_path:
        if spec in shipped_tables():
            res = resources.files("l2s_gui.resources").joinpath(f"label_tables/{spec}.json")
            return LabelTable.from_json(res.read_text(), source=f"label table {spec!r}")
        if not Path(spec).is_file():
            raise InputError(f"label table {spec!r}: not a shipped table ({', '.join(shipped_tables())}) "
                             f"and no such file; use 'auto', a shipped name or a .json path")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: label table file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the label table ({exc})") from None
    table = LabelTable.from_json(text, source=path)
    if not table.name:
        table.name = path.stem
    return table
