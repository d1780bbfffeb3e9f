"""Reading the HDF5 files a user gives (problem files, ISMRMRD raw data, output maps) at bounded
cost, with one-line errors.

A damaged or crafted HDF5 file can make the HDF5 library raise ``OSError``, ``RuntimeError``,
``KeyError``, ``ValueError`` or ``TypeError`` from any call, and allocate whatever a corrupted
length field declares: a variable-length string attribute whose 4-byte length is damaged makes
the library allocate and touch up to 4 GiB before it notices the mismatch (15 s and 4.2 GB for
one ``f.attrs["format"]``), or crash. Four rules bound every read of such a file:

1. The calls into h5py run inside :func:`reading`, which turns the library's exceptions into
   :class:`ProblemFileError` naming the file and the field. Only those calls: an error of the
   same types raised by lorein's own code elsewhere keeps its traceback.
2. Inside :func:`reading` the process may grow by the size the read declares plus
   :data:`MEMORY_MARGIN` (on Linux, the address-space limit ``RLIMIT_AS`` is lowered for the
   call), so a corrupted length field fails at once with ``memory allocation failed``.
3. Before a dataset is read, :func:`read_dataset` checks what it declares: storage inside the
   file (no external files, which would read other files of the machine, no virtual datasets),
   and a size the file can hold.
4. The library itself can crash on a damaged file (HDF5 2.0 dies of SIGSEGV reading a
   variable-length string whose global-heap reference is damaged) or loop. So before a file is
   opened, :func:`open_file` walks it in a forked process (:func:`probe`): every object, every
   attribute, every dataset up to :data:`PROBE_BYTES`; a crash or a walk longer than
   :data:`PROBE_SECONDS` is a one-line error naming the field being read, and the reads that
   follow, which the walk has already made once, are safe. Larger datasets are only
   size-checked and read under the memory bound. (Linux and macOS; without ``os.fork`` the walk
   is skipped.)
"""

from __future__ import annotations

import faulthandler
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import h5py
import numpy as np

MEMORY_MARGIN = 64 * 2**20
"""Bytes a read may allocate beyond the data it declares: the HDF5 metadata and chunk caches,
type-conversion buffers, Python objects."""

MAX_COMPRESSION = 1100
"""Largest ratio of a filtered (compressed) dataset's size to the file's size: deflate, the
only filter h5py always has, compresses at most about 1032:1."""

HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, MemoryError)
"""What h5py raises for a damaged file (and an allocation refused under the limit)."""

PROBE_BYTES = 16 * 2**20
"""Datasets up to this size are read by the walk of :func:`probe` (all of a problem file's but
its k-space and coils at realistic sizes)."""

PROBE_SECONDS = 60.0
"""Longest walk of :func:`probe` (milliseconds for a valid file)."""


class ProblemFileError(ValueError):
    """A file given as input (a problem file, a problem about to be written, ISMRMRD raw data and
    its sidecar, output maps) breaks its contract or cannot be read.

    Parameters
    ----------
    source
        The file (or ``"PATH (not written)"`` for a problem being written).
    field
        Where in it: an HDF5 path (``/kspace/ky``), an attribute (``/geometry@matrix``), a key
        of a sidecar, or ``/`` for the file itself.
    message
        What was expected and what was found.
    """

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        super().__init__(" ".join(f"{source}: {field}: {message}".split()))


def fail(source: str, where: str, message: str) -> NoReturn:
    """Raise :class:`ProblemFileError`."""
    raise ProblemFileError(source, where, message)


@contextmanager
def reading(source: str, where: str, declared: int = 0) -> Iterator[None]:
    """Run h5py calls on a user's file: errors become one line, memory growth is bounded.

    Parameters
    ----------
    source
        The file, for messages.
    where
        The field read, for messages.
    declared
        Bytes the read is entitled to (the data it declares); it may allocate
        :data:`MEMORY_MARGIN` more.

    Raises
    ------
    ProblemFileError
        For any of :data:`HDF5_ERRORS` raised in the block.
    """
    try:
        with _memory_limit(declared + MEMORY_MARGIN):
            yield
    except ProblemFileError:
        raise
    except MemoryError:
        fail(
            source,
            where,
            f"expected a read within {declared + MEMORY_MARGIN} bytes of memory, found one that "
            "needs more (a damaged length field)",
        )
    except HDF5_ERRORS as err:
        text = " ".join(str(err).split()) or type(err).__name__
        fail(source, where, f"expected a readable HDF5 item, found a damaged one ({text})")


@contextmanager
def _memory_limit(extra: int) -> Iterator[None]:
    """Let the process's address space grow by at most ``extra`` bytes in the block (Linux;
    elsewhere the block runs unbounded). Reads run on the main thread, one at a time."""
    if sys.platform != "linux":
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = used + extra
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            limit = min(limit, bound)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def open_file(path: str | os.PathLike[str], source: str, what: str) -> h5py.File:
    """Open an existing HDF5 file for reading.

    Raises
    ------
    ProblemFileError
        The path is missing or a directory, or HDF5 cannot open the file.
    """
    if not os.path.exists(path):
        fail(source, "/", f"expected {what}, found no such file")
    if os.path.isdir(path):
        fail(source, "/", f"expected {what}, found a directory")
    probe(path, source)
    try:
        with _memory_limit(MEMORY_MARGIN):
            return h5py.File(path, "r")
    except HDF5_ERRORS as err:
        text = " ".join(str(err).split())
        fail(source, "/", f"expected an HDF5 file, found one HDF5 cannot open ({text})")


@dataclass(frozen=True)
class Forked:
    """How a call run by :func:`run_forked` ended.

    Attributes
    ----------
    ending
        ``"returned"``, ``"raised"``, ``"crashed"`` (killed by a signal) or ``"timed out"``.
    lines
        What the call reported, line by line.
    signal
        The signal that killed it (``"crashed"``), else None.
    """

    ending: str
    lines: list[str]
    signal: int | None = None


def run_forked(work: Callable[[Callable[[str], None]], None], timeout_s: float) -> Forked:
    """Run ``work(report)`` in a forked child process, ``report(line)`` sending lines back.

    The child exits as soon as ``work`` returns or raises (``os._exit``: no cleanup of the
    parent's state); past ``timeout_s`` it is killed.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        faulthandler.disable()  # a crash is the parent's to report
        code = 1
        try:
            work(lambda line: os.write(write_end, line.encode() + b"\n"))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    status = None
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if select.select([read_end], [], [], remaining)[0]:
                chunk = os.read(read_end, 65536)
                if not chunk:  # the child has exited
                    status = os.waitpid(pid, 0)[1]
                    break
                received += chunk
    finally:
        if status is None:  # timed out, or this process was interrupted
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(read_end)
    lines = received.decode(errors="replace").splitlines()
    if status is None:
        return Forked("timed out", lines)
    if os.WIFSIGNALED(status):
        return Forked("crashed", lines, os.WTERMSIG(status))
    return Forked("returned" if os.WEXITSTATUS(status) == 0 else "raised", lines)


def probe(path: str | os.PathLike[str], source: str) -> None:
    """Walk the HDF5 file ``path`` in a forked process, as rule 4 of the module says.

    Raises
    ------
    ProblemFileError
        The library crashed, or the walk ran past :data:`PROBE_SECONDS`, naming the field being
        read. Errors the library raises are left to the reads that follow.
    """
    if not hasattr(os, "fork"):
        return
    ended = run_forked(lambda report: _walk(path, report), PROBE_SECONDS)
    where = ended.lines[-1] if ended.lines else "/"
    if ended.ending == "crashed":
        name = signal.Signals(ended.signal).name if ended.signal else "a signal"
        fail(
            source,
            where,
            f"expected a readable HDF5 item, found one that crashes the HDF5 "
            f"library ({name}): damaged",
        )
    if ended.ending == "timed out":
        fail(source, where, f"expected a read within {PROBE_SECONDS:g} s, found none: damaged")


def _walk(path: str | os.PathLike[str], report: Callable[[str], None]) -> None:
    """Read every object, attribute and small dataset of ``path`` (memory bounded), reporting
    each field before reading it."""
    report("/")
    with _memory_limit(MEMORY_MARGIN + PROBE_BYTES), h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            where = f"/{name}" if name else ""
            for attribute in list(obj.attrs):
                report(f"{where or '/'}@{attribute}")
                obj.attrs[attribute]
            if isinstance(obj, h5py.Dataset):
                report(where)
                if obj.external is None and not obj.is_virtual:
                    declared = int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize
                    if declared <= PROBE_BYTES:
                        obj[()]

        visit("", f)
        f.visititems(visit)


def get(parent: h5py.Group, name: str, source: str, where: str) -> Any:
    """The group or dataset ``name`` of ``parent``, or None when there is none.

    A damaged link is an error (``parent.get`` would take it for a missing one), and so is an
    external link on the way: it would read another file of the machine.
    """
    with reading(source, where):
        group = parent
        for part in name.split("/"):
            if part not in group:
                return None
            link = group.get(part, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                fail(
                    source,
                    where,
                    f"expected an item of the file itself, found an external link to "
                    f"{link.filename}:{link.path}",
                )
            group = group[part]
        return group


def read_dataset(
    parent: h5py.Group, name: str, source: str, where: str, rows: slice | None = None
) -> np.ndarray:
    """Read a dataset (whole, or the ``rows`` of its first axis) after checking what it declares.

    Parameters
    ----------
    parent
        Group (or file) holding the dataset.
    name
        Its path relative to ``parent``.
    source, where
        File and field for messages.
    rows
        Rows to read; default all.

    Raises
    ------
    ProblemFileError
        No dataset at ``name``, storage outside the file, a declared size the file cannot hold,
        or an error of the library while reading.
    """
    dataset = get(parent, name, source, where)
    if not isinstance(dataset, h5py.Dataset):
        found = "nothing" if dataset is None else "a group"
        fail(source, where, f"expected a dataset, found {found}")
    declared = dataset_size(dataset, source, where)
    with reading(source, where, declared):
        return np.asarray(dataset[()] if rows is None else dataset[rows])


def dataset_size(dataset: h5py.Dataset, source: str, where: str) -> int:
    """Bytes ``dataset`` declares (shape x item size), checked against the file that holds it.

    Raises
    ------
    ProblemFileError
        Storage in external files or a virtual dataset, or more bytes than the file can hold:
        its own size, or :data:`MAX_COMPRESSION` times it for a filtered dataset.
    """
    with reading(source, where):
        shape, itemsize = dataset.shape, dataset.dtype.itemsize
        external, virtual = dataset.external, dataset.is_virtual
        filters = dataset.id.get_create_plist().get_nfilters()
        file_size = os.path.getsize(dataset.file.filename)
    if external or virtual:
        kind = "external files" if external else "a virtual dataset (other files)"
        fail(source, where, f"expected data stored in the file itself, found {kind}")
    declared = int(np.prod(shape, dtype=np.float64)) * itemsize if shape else itemsize
    room = file_size * (MAX_COMPRESSION if filters else 1)
    if declared > room:
        fail(
            source,
            where,
            f"expected at most {room} bytes (the file's size"
            f"{f' x {MAX_COMPRESSION}, compressed' if filters else ''}), found shape "
            f"{list(shape)} of {dataset.dtype} ({declared / 2**30:.3g} GiB): damaged",
        )
    return declared


def read_attribute(obj: h5py.HLObject, name: str, source: str, where: str) -> Any:
    """Read attribute ``name`` of ``obj`` (None when absent); bytes are decoded as UTF-8.

    Raises
    ------
    ProblemFileError
        An error of the library while reading, or an allocation beyond
        :data:`MEMORY_MARGIN` (a damaged length field).
    """
    with reading(source, where):
        if name not in obj.attrs:
            return None
        value = obj.attrs[name]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return value


def attribute_names(obj: h5py.HLObject, source: str, where: str) -> list[str]:
    """Names of ``obj``'s attributes, in the file's order."""
    with reading(source, where):
        return list(obj.attrs)


def member_names(group: h5py.Group, source: str, where: str) -> list[str]:
    """Names of the members of ``group``, sorted."""
    with reading(source, where):
        return sorted(group)
