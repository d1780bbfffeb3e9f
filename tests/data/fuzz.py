"""Random corruptions of valid input files, and a reader that runs each read in a worker process
with a time limit; shared by tests/data/test_fuzz_inputs.py (a few hundred examples) and
benchmarks/fuzz_inputs.py (thousands).

A corruption (:func:`corruptions`) is a list of edits drawn by hypothesis: structural ones made
with h5py (an attribute or a dataset replaced by random data of another shape or dtype, a
dataset declaring a huge shape, a dataset replaced by a group or a link to itself, an item
deleted, an ISMRMRD acquisition head or XML header changed) and then byte-level ones (bytes
overwritten, the file truncated). :class:`Reader` reads the corrupted file in a forked worker
and classifies the outcome: ``ok``, ``error`` (the one-line :class:`ProblemFileError` naming
the file), ``traceback`` (anything else, with its text), ``crash`` (the worker died of a signal)
or ``hang`` (the worker ran past the time limit and was killed).
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import strategies as st

from lorein.data.hdf5_input import ProblemFileError
from lorein.data.ismrmrd_io import export_ismrmrd, import_ismrmrd
from lorein.data.problem import problem_summary, read_truth, write_problem
from tests.data.test_problem import make_problem, make_truth

PROBLEM_ITEMS = {
    "datasets": [
        "kspace/data",
        "kspace/ky",
        "kspace/kz",
        "kspace/contrast",
        "contrasts/flip_angle",
        "contrasts/echo_time",
        "contrasts/repetition_time",
        "contrasts/prep_time",
        "contrasts/segment",
        "coils",
        "truth/T1",
        "truth/mask",
        "truth/labels",
    ],
    "attributes": [
        ("/", "format"),
        ("/", "format_version"),
        ("/", "signal_model"),
        ("/", "preset"),
        ("geometry", "matrix"),
        ("geometry", "voxel_size"),
        ("geometry", "affine"),
    ],
}
"""What structural edits of a problem file aim at."""

RAW_ITEMS = {"datasets": ["dataset/data", "dataset/xml"], "attributes": []}
"""What structural edits of an ISMRMRD file aim at (besides heads and the XML text)."""

HEAD_FIELDS = (
    "number_of_samples",
    "active_channels",
    "discard_pre",
    "discard_post",
    "center_sample",
    "flags",
    "trajectory_dimensions",
    "encoding_space_ref",
    "sample_time_us",
)
"""Acquisition-head fields the ISMRMRD edits change."""

_DTYPES = ["i1", "<i4", ">i8", "u2", "f2", "<f4", ">f8", "c8", "c16", "?", "S5"]


def valid_files(folder: Path) -> dict[str, Path]:
    """A small valid problem file (t2ir_gre, coils, truth, provenance) and its ISMRMRD export."""
    problem = make_problem()
    write_problem(folder / "problem.h5", problem, make_truth(), attrs={"preset": "tiny"})
    export_ismrmrd(problem, folder / "raw.h5", calibration=(4, 2))
    return {"problem": folder / "problem.h5", "raw": folder / "raw.h5"}


# --------------------------------------------------------------------------------------------
# random edits
# --------------------------------------------------------------------------------------------

_sizes = st.integers(0, 6)
_huge = st.integers(2**20, 2**40)


@st.composite
def _arrays(draw: st.DrawFn) -> np.ndarray:
    """A small random array: 0-3 axes of 0-6, any of :data:`_DTYPES`."""
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = tuple(draw(st.lists(_sizes, max_size=3)))
    size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=size, max_size=size))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    _arrays(),
)


def _structural(items: dict[str, list[Any]]) -> st.SearchStrategy[tuple[Any, ...]]:
    """One h5py edit of a dataset or attribute among ``items``."""
    datasets = st.sampled_from(items["datasets"])
    edits = [
        st.tuples(st.just("array"), datasets, _arrays()),
        st.tuples(st.just("retype"), datasets, st.sampled_from(_DTYPES)),
        st.tuples(st.just("resize"), datasets, st.integers(-3, 3)),
        st.tuples(st.just("declare"), datasets, st.lists(_huge, min_size=1, max_size=3)),
        st.tuples(st.just("group"), datasets),
        st.tuples(st.just("self-link"), datasets),
        st.tuples(st.just("delete"), datasets),
    ]
    if items["attributes"]:
        attributes = st.sampled_from(items["attributes"])
        edits += [
            st.tuples(st.just("attribute"), attributes, _values),
            st.tuples(st.just("delete-attribute"), attributes),
        ]
    return st.one_of(edits)


_head_edits = st.tuples(
    st.just("head"), st.sampled_from(HEAD_FIELDS), st.integers(0, 10**6), st.integers(0, 2**64 - 1)
)
_xml_edits = st.tuples(st.just("xml"), st.floats(0, 1), st.integers(0, 40), st.text(max_size=12))
_byte_edits = st.one_of(
    st.tuples(st.just("bytes"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("metadata-bytes"), st.integers(0, 4095), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
)


def corruptions(kind: str) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Lists of 1-4 edits of a ``"problem"`` or ``"raw"`` (ISMRMRD) file."""
    structural = _structural(PROBLEM_ITEMS if kind == "problem" else RAW_ITEMS)
    if kind == "raw":
        structural = st.one_of(structural, _head_edits, _xml_edits)
    return st.lists(st.one_of(structural, _byte_edits), min_size=1, max_size=4)


def corrupt(valid: Path, edits: list[tuple[Any, ...]], target: Path) -> None:
    """Write ``target``: the file ``valid`` with the h5py ``edits`` made, then the byte ones."""
    target.write_bytes(valid.read_bytes())
    structural = [e for e in edits if e[0] not in ("bytes", "metadata-bytes", "truncate")]
    if structural:
        with h5py.File(target, "r+") as f:
            for edit in structural:
                try:
                    _EDITS[edit[0]](f, *edit[1:])
                except (ValueError, TypeError, OSError, KeyError, RuntimeError):
                    pass  # h5py cannot store this value or shape: the edit is skipped
    data = bytearray(target.read_bytes())
    for edit in edits:
        if edit[0] == "bytes":
            at = int(edit[1] * (len(data) - 1))
            data[at : at + len(edit[2])] = edit[2]
        elif edit[0] == "metadata-bytes":
            data[edit[1] : edit[1] + len(edit[2])] = edit[2]
        elif edit[0] == "truncate":
            del data[int(edit[1] * len(data)) :]
    target.write_bytes(bytes(data))


def _replace_by(f: h5py.File, name: str, make: Callable[[str], None]) -> None:
    if name in f:
        del f[name]
    make(name)


def _array(f: h5py.File, name: str, array: np.ndarray) -> None:
    _replace_by(f, name, lambda n: f.create_dataset(n, data=array))


def _small(f: h5py.File, name: str) -> np.ndarray | None:
    """The values of a small numeric dataset ``name`` (None for anything else: an earlier edit
    may have left a group, a link or a dataset declaring terabytes there)."""
    dataset = f.get(name)
    small = isinstance(dataset, h5py.Dataset) and dataset.size <= 10**6
    if not small or dataset.dtype.kind not in "biufc":
        return None
    return dataset[()]


def _retype(f: h5py.File, name: str, dtype: str) -> None:
    values = _small(f, name)
    if values is not None:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # complex to real: the point of the edit
            _array(f, name, values.astype(dtype))


def _resize(f: h5py.File, name: str, change: int) -> None:
    values = _small(f, name)
    if values is not None and values.ndim >= 1:
        rows = max(len(values) + change, 0)
        _array(f, name, np.resize(values, (rows, *values.shape[1:])))


def _declare(f: h5py.File, name: str, shape: list[int]) -> None:
    _replace_by(f, name, lambda n: f.create_dataset(n, shape=tuple(shape), dtype="<f4"))


def _group(f: h5py.File, name: str) -> None:
    _replace_by(f, name, f.create_group)


def _self_link(f: h5py.File, name: str) -> None:
    _replace_by(f, name, lambda n: f.__setitem__(n, h5py.SoftLink("/" + n)))


def _delete(f: h5py.File, name: str) -> None:
    if name in f:
        del f[name]


def _attribute(f: h5py.File, where: tuple[str, str], value: Any) -> None:
    obj, name = where
    if obj in f:
        f[obj].attrs[name] = value


def _delete_attribute(f: h5py.File, where: tuple[str, str]) -> None:
    obj, name = where
    if obj in f and name in f[obj].attrs:
        del f[obj].attrs[name]


def _head(f: h5py.File, field: str, index: int, value: int) -> None:
    data = f.get("dataset/data")
    if not isinstance(data, h5py.Dataset) or data.dtype.names is None or not len(data):
        return
    record = data[index % len(data)]
    dtype = record["head"][field].dtype
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    record["head"][field] = value % (info.max + 1) if info is not None else float(value % 10**6)
    data[index % len(data)] = record


def _xml(f: h5py.File, at: float, cut: int, insert: str) -> None:
    xml = f.get("dataset/xml")
    if not isinstance(xml, h5py.Dataset) or xml.dtype.kind != "O" or xml.shape != (1,):
        return
    text = xml[0].decode("utf-8", errors="replace")
    i = int(at * len(text))
    xml[0] = (text[:i] + insert + text[i + cut :]).encode("utf-8", errors="replace")


_EDITS: dict[str, Callable[..., None]] = {
    "array": _array,
    "retype": _retype,
    "resize": _resize,
    "declare": _declare,
    "group": _group,
    "self-link": _self_link,
    "delete": _delete,
    "attribute": _attribute,
    "delete-attribute": _delete_attribute,
    "head": _head,
    "xml": _xml,
}


# --------------------------------------------------------------------------------------------
# reading in a worker, with a time limit
# --------------------------------------------------------------------------------------------


def _read_problem(path: str) -> None:
    problem_summary(path)
    read_truth(path)


READERS: dict[str, Callable[[str], Any]] = {
    "problem": _read_problem,
    "raw": import_ismrmrd,
}
"""What reads each kind of file: the problem-file reader (``lorein info``, then the truth of
``lorein eval``) and the ISMRMRD importer."""


def _outcome(kind: str, path: str) -> tuple[str, str]:
    """Read ``path`` (in the worker); the outcome and its message or traceback."""
    try:
        READERS[kind](path)
    except ProblemFileError as err:
        message = str(err)
        if "\n" in message or not message.startswith(f"{path}: "):
            return "traceback", f"not one line naming the file: {message!r}"
        return "error", message
    except BaseException:
        return "traceback", traceback.format_exc()
    return "ok", ""


@dataclass
class Outcome:
    """How one read ended: ``ok``, ``error``, ``traceback``, ``crash`` or ``hang``; its text;
    seconds."""

    kind: str
    text: str
    seconds: float


class Reader:
    """Reads files in a forked worker process, one at a time, each within ``limit_s`` seconds:
    a worker that runs past it is killed (a ``hang``), one that dies is a ``crash``; either is
    replaced by a new worker."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._context = multiprocessing.get_context("fork")
        self._start()

    def _start(self) -> None:
        self._connection, theirs = self._context.Pipe()
        self._worker = self._context.Process(target=_serve, args=(theirs,), daemon=True)
        self._worker.start()
        theirs.close()

    def read(self, kind: str, path: Path) -> Outcome:
        start = time.perf_counter()
        self._connection.send((kind, str(path)))
        ready = wait([self._connection, self._worker.sentinel], timeout=self.limit_s)
        if self._connection in ready:
            result, text = self._connection.recv()
        else:  # the worker serves until killed: its end is a crash, no answer a hang
            died = self._worker.sentinel in ready
            self.close()
            result = "crash" if died else "hang"
            text = "the worker died" if died else f"no answer within {self.limit_s} s"
            self._start()
        return Outcome(result, text, time.perf_counter() - start)

    def close(self) -> None:
        self._worker.kill()
        self._worker.join()
        self._connection.close()


def _serve(connection: Connection) -> None:
    """The worker: read each ``(kind, path)`` received, send back its outcome."""
    while True:
        connection.send(_outcome(*connection.recv()))
