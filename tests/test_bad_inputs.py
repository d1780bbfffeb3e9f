"""Bad input of every kind through the command line: problem files, flags, configuration files,
sidecars, ISMRMRD and Siemens raw data, Pulseq sequences, checkpoints and output folders.

Every case must end with exit status 2 (130 after Ctrl-C), exactly one non-empty line on
standard error naming the file (or the flag) and the field, and nothing written: the folder the
case works in holds the same entries, of the same sizes, before and after (no output folder, no
hidden temporary file or folder, no lock). The inputs are corruptions of one tiny problem file,
its ISMRMRD export and a tiny Siemens twix file (with the fully sampled problem imported from
it), made once for the module; the CLI runs in-process.
"""

from __future__ import annotations

import math
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
import torch
from ismrmrd import xsd

import lorein.run
from lorein.cli import main
from lorein.data.ismrmrd_io import export_ismrmrd
from lorein.data.output import Maps, write_output
from lorein.data.problem import read_problem, write_problem
from lorein.data.twix_io import read_twix
from lorein.methods.registry import METHODS
from lorein.numerics.checkpoint import save_checkpoint
from lorein.run import load_config, run_identity
from lorein.sim.simulate import simulate
from tests.data.test_ismrmrd_io import drop_user_parameters, edit_header
from tests.data.test_twix_io import PRODUCT, write_twix
from tests.helpers import TINY, randn_complex
from tests.numerics.test_checkpoint import crafted_checkpoint


@dataclass(frozen=True)
class Inputs:
    """The module's valid inputs: a tiny problem file (with truth) and its ISMRMRD export, a
    Siemens twix file (2 echoes of 4 x 8) and the fully sampled problem imported from it."""

    problem: Path
    raw: Path
    twix: Path
    full: Path


@dataclass(frozen=True)
class Bad:
    """One bad input: the command line, what its one-line error must name, its exit status."""

    argv: list[str]
    names: tuple[str, ...]
    status: int = 2
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


Case = Callable[[Inputs, Path], Bad]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    folder = tmp_path_factory.mktemp("inputs")
    sim = simulate(TINY, 8, seed=2, snr=math.inf, progress=False)
    write_problem(folder / "tiny.h5", sim.problem, truth=sim.truth)
    export_ismrmrd(sim.problem, folder / "raw.h5", calibration=(8, 2))
    _write_product(folder / "meas.dat", PRODUCT)
    full = read_twix(folder / "meas.dat", signal_model="vfa_megre").problem
    write_problem(folder / "full.h5", full)
    return Inputs(folder / "tiny.h5", folder / "raw.h5", folder / "meas.dat", folder / "full.h5")


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _write_product(path: Path, protocol: str) -> None:
    """A twix file of a product sequence: 2 echoes x 4 lines of 2 coils x 16 samples."""
    data = randn_complex(8, 2, 16, seed=1).numpy()
    lines = [(data[i], {"Lin": i % 4, "Eco": i // 4}, ()) for i in range(8)]
    write_twix(path, protocol, lines)


def _copy(source: Path, tmp: Path, name: str = "p.h5") -> Path:
    return Path(shutil.copy(source, tmp / name))


def _edited(inputs: Inputs, tmp: Path, edit: Callable[[h5py.File], None]) -> Path:
    """A copy of the problem file changed by ``edit`` (h5py, in place)."""
    path = _copy(inputs.problem, tmp)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    """An edit replacing dataset ``name`` by ``make(its values)``."""

    def edit(f: h5py.File) -> None:
        values = f[name][()]
        del f[name]
        f.create_dataset(name, data=make(values))

    return edit


def _declared(name: str, shape: tuple[int, ...], dtype: str) -> Callable[[h5py.File], None]:
    """An edit replacing dataset ``name`` by one that declares ``shape`` and holds nothing."""

    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype)

    return edit


def _group_for(name: str) -> Callable[[h5py.File], None]:
    """An edit replacing dataset ``name`` by an empty group."""

    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_group(name)

    return edit


def _attr(where: str, name: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[where].attrs[name] = value

    return edit


def _delete(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]

    return edit


def _info(edit: Callable[[h5py.File], None], field: str) -> Case:
    """``lorein info`` on the problem file changed by ``edit``; the error names ``field``."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        path = _edited(inputs, tmp, edit)
        return Bad(["info", str(path)], (f"{path}: {field}:",))

    return case


def _bytes(make: Callable[[bytes], bytes], field: str, command: str = "info") -> Case:
    """A command on a file whose bytes are ``make(the problem file's bytes)``."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        path = tmp / "p.h5"
        path.write_bytes(make(inputs.problem.read_bytes()))
        output = [] if command == "info" else ["-o", str(tmp / "out")]
        return Bad([command, str(path), *output], (f"{path}: {field}",))

    return case


def _vlen_length_bomb(data: bytes) -> bytes:
    """The problem file with the 4-byte length of its ``format`` attribute (``lorein-problem``,
    a variable-length string in the global heap) raised to about 4 GiB."""
    descriptor = struct.pack("<IQ", len("lorein-problem"), data.index(b"GCOL"))
    assert data.count(descriptor) == 1
    at = data.index(descriptor)
    return data[:at] + struct.pack("<I", 0xFFFFFFF0) + data[at + 4 :]


def _vlen_class_damaged(data: bytes) -> bytes:
    """The problem file with the class bits of the ``signal_model`` attribute's variable-length
    string type overwritten (found by benchmarks/fuzz_inputs.py): reading it kills the process
    with SIGSEGV inside HDF5 2.0."""
    message = b"signal_model\x00\x00\x00\x00\x19\x01\x01\x00"
    assert data.count(message) == 1
    at = data.index(message) + len(message) - 3
    return data[:at] + b"\x4c\xdb" + data[at + 2 :]


def _group_tree_damaged(data: bytes) -> bytes:
    """The problem file with the address of the root group's B-tree (its links), in the
    superblock and in the root's symbol-table message, pointing far beyond the file's end."""
    tree, heap = data.index(b"TREE"), data.index(b"HEAP")
    message = struct.pack("<QQ", tree, heap)
    assert data.count(message) == 2
    return data.replace(message, struct.pack("<QQ", 2**40, heap))


def _external_ky(f: h5py.File) -> None:
    """``/kspace/ky`` stored in another file of the machine (read by HDF5 if allowed)."""
    other = Path(f.filename).with_name("elsewhere.bin")
    other.write_bytes(np.arange(4096, dtype=np.int32).tobytes())
    n_lines = f["kspace/data"].shape[0]
    del f["kspace/ky"]
    f.create_dataset(
        "kspace/ky", shape=(n_lines,), dtype="<i4", external=[(str(other), 0, 4 * n_lines)]
    )


def _external_link_ky(f: h5py.File) -> None:
    """``/kspace/ky`` an external link to a dataset of another HDF5 file of the machine."""
    other = Path(f.filename).with_name("elsewhere.h5")
    with h5py.File(other, "w") as g:
        g["ky"] = f["kspace/ky"][()]
    del f["kspace/ky"]
    f["kspace/ky"] = h5py.ExternalLink(str(other), "/ky")


def _config(text: str, method: str = "lorein", *extra: str) -> Case:
    """``lorein recon`` with a configuration file holding ``text``; the error names the file
    and the key of the last line of ``text`` (or the ``extra`` words)."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        config = tmp / "c.toml"
        config.write_text(text)
        argv = ["recon", str(inputs.problem), "-o", str(tmp / "out"), "--method", method]
        key = text.splitlines()[-1].split("=")[0].strip()
        return Bad([*argv, "--config", str(config)], (str(config), *(extra or (key,))))

    return case


def _recon(*flags: str, names: tuple[str, ...]) -> Case:
    def case(inputs: Inputs, tmp: Path) -> Bad:
        argv = ["recon", str(inputs.problem), "-o", str(tmp / "out"), *flags]
        return Bad(argv, names)

    return case


def _simulate(*flags: str, names: tuple[str, ...]) -> Case:
    def case(inputs: Inputs, tmp: Path) -> Bad:
        return Bad(["simulate", *flags, "-o", str(tmp / "sim.h5")], names)

    return case


def _sidecar(text: str, key: str) -> Case:
    """``lorein import`` of the raw file with a sidecar holding ``text``; names it and ``key``."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        sidecar = tmp / "seq.toml"
        sidecar.write_text(text)
        argv = ["import", str(inputs.raw), "-o", str(tmp / "p.h5"), "--sidecar", str(sidecar)]
        return Bad(argv, (f"{sidecar}: {key}",))

    return case


def _raw(edit: Callable[[Path], None], field: str) -> Case:
    """``lorein import`` of a copy of the raw file changed by ``edit``; names ``field``."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        raw = _copy(inputs.raw, tmp, "raw.h5")
        edit(raw)
        return Bad(["import", str(raw), "-o", str(tmp / "p.h5")], (f"{raw}: {field}",))

    return case


def _xml(make: Callable[[str], str]) -> Callable[[Path], None]:
    """An edit of a raw file's XML header as text."""

    def edit(raw: Path) -> None:
        with ismrmrd.Dataset(str(raw), create_if_needed=False) as dset:
            text = dset.read_xml_header().decode()
            dset.write_xml_header(make(text).encode())

    return edit


def _header(edit: Callable[[xsd.ismrmrdHeader], None]) -> Callable[[Path], None]:
    return lambda raw: edit_header(raw, edit)


def _heads(**values: int) -> Callable[[Path], None]:
    """Set fields of every acquisition head of a raw file."""

    def edit(raw: Path) -> None:
        with h5py.File(raw, "r+") as f:
            records = f["dataset/data"][()]
            for field, value in values.items():
                records["head"][field] = value
            f["dataset/data"][...] = records

    return edit


def _in_file(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    """An h5py ``edit`` as an edit of the file at a path."""

    def apply(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            edit(f)

    return apply


def _laughs(text: str) -> str:
    """The XML header with the signal model replaced by a billion-laughs entity (10^9 x "ha")."""
    entities = ['<!ENTITY a0 "ha">'] + [
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10)
    ]
    body = text.split("?>", 1)[-1]
    assert "<value>vfa_megre</value>" in body
    body = body.replace("<value>vfa_megre</value>", "<value>&a9;</value>")
    return f"<!DOCTYPE ismrmrdHeader [{''.join(entities)}]>{body}"


def _te_in_seconds_in_the_header(header: xsd.ismrmrdHeader) -> None:
    drop_user_parameters("lorein.echo_time_s")(header)
    header.sequenceParameters.TE = [0.0046]


def _checkpoint(write: Callable[[Path, Inputs], None], named: str) -> Case:
    """``lorein recon --resume`` into a folder holding the checkpoint ``write`` makes."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        out = tmp / "out"
        out.mkdir()
        checkpoint = out / "checkpoint.pt"
        write(checkpoint, inputs)
        argv = ["recon", str(inputs.problem), "-o", str(out), "--method", "lrt", "--resume"]
        return Bad(argv, (str(checkpoint), named))

    return case


def _of_seed_one(path: Path, inputs: Inputs) -> None:
    problem = read_problem(inputs.problem)
    config = load_config(METHODS["lrt"], None, None, problem)
    save_checkpoint({"identity": run_identity("lrt", problem, config, 1)}, path)


def _output(inputs: Inputs, tmp: Path, maps: dict[str, np.ndarray] | None = None) -> Path:
    """An output folder whose maps.h5 holds ``maps`` (default: the problem's T1 truth)."""
    out = tmp / "out"
    if maps is None:
        with h5py.File(inputs.problem) as f:
            maps = {"T1": f["truth/T1"][()]}
    with h5py.File(inputs.problem) as f:
        affine = f["geometry"].attrs["affine"]
    tensors = {k: torch.from_numpy(v) for k, v in maps.items()}
    write_output(out, Maps(values=tensors), affine, {}, method="test")
    return out


def _eval(
    change: Callable[[Path, Path], Path], names: Callable[[Path, Path], tuple[str, ...]]
) -> Case:
    """``lorein eval`` of an output folder against the problem's truth; ``change(out, truth)``
    breaks one and returns the truth file to use."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        out = _output(inputs, tmp)
        truth = change(out, _copy(inputs.problem, tmp))
        return Bad(["eval", str(out), "--truth", str(truth)], names(out, truth))

    return case


def _maps_not_hdf5(out: Path, truth: Path) -> Path:
    (out / "maps.h5").write_bytes(b"not an HDF5 file")
    return truth


def _complex_map(out: Path, truth: Path) -> Path:
    with h5py.File(out / "maps.h5", "r+") as f:
        t1 = f["T1"][()]
        del f["T1"]
        f["T1"] = t1.astype(np.complex64)
    return truth


def _without_truth(out: Path, truth: Path) -> Path:
    with h5py.File(truth, "r+") as f:
        del f["truth"]
    return truth


def _purity_above_one(out: Path, truth: Path) -> Path:
    with h5py.File(truth, "r+") as f:
        f["truth/purity"][0, 0, 0] = 2.0
    return truth


def _other_grid(inputs: Inputs, tmp: Path) -> Bad:
    out = _output(inputs, tmp, {"T1": np.ones((4, 24, 20), np.float32)})
    argv = ["eval", str(out), "--truth", str(inputs.problem)]
    return Bad(argv, (f"{out / 'maps.h5'}: /T1:", "grid"))


def _interrupted(inputs: Inputs, tmp: Path) -> Bad:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    argv = ["recon", str(inputs.problem), "-o", str(tmp / "out"), "--method", "fit"]
    return Bad(
        argv,
        ("interrupted", "--resume"),
        status=130,
        patch=lambda m: m.setattr(lorein.run, "run", interrupt),
    )


def _resume_without_checkpoint(inputs: Inputs, tmp: Path) -> Bad:
    out = tmp / "out"
    argv = ["recon", str(inputs.problem), "-o", str(out), "--method", "fit", "--resume"]
    return Bad(argv, (str(out / "checkpoint.pt"), "no checkpoint"))


def _output_is_a_file(inputs: Inputs, tmp: Path) -> Bad:
    target = tmp / "taken.h5"
    target.write_text("someone's file")
    argv = ["recon", str(inputs.problem), "-o", str(target), "--method", "fit"]
    return Bad(argv, (str(target), "(-o)"))


def _import_table(inputs: Inputs, tmp: Path) -> Bad:
    config = tmp / "study.toml"
    config.write_text("[import]\necho_time_ms = 0.0046\n")
    argv = ["import", str(inputs.raw), "-o", str(tmp / "p.h5"), "--config", str(config)]
    return Bad(argv, (f"{config} [import]: echo_time_ms:", "looks like s"))


def _missing_sidecar(inputs: Inputs, tmp: Path) -> Bad:
    sidecar = tmp / "nope.toml"
    argv = ["import", str(inputs.raw), "-o", str(tmp / "p.h5"), "--sidecar", str(sidecar)]
    return Bad(argv, (str(sidecar), "sidecar file not found"))


def _non_utf8_config(inputs: Inputs, tmp: Path) -> Bad:
    config = tmp / "latin1.toml"
    config.write_bytes("[lorein]\n# Größe\nlr = 0.01\n".encode("latin-1"))
    argv = ["recon", str(inputs.problem), "-o", str(tmp / "out"), "--config", str(config)]
    return Bad(argv, (str(config), "not UTF-8 text (byte"))


def _missing_config(inputs: Inputs, tmp: Path) -> Bad:
    config = tmp / "nope.toml"
    argv = ["recon", str(inputs.problem), "-o", str(tmp / "out"), "--config", str(config)]
    return Bad(argv, (str(config), "configuration file not found"))


def _export(*flags: str, broken: Callable[[h5py.File], None] | None = None) -> Case:
    def case(inputs: Inputs, tmp: Path) -> Bad:
        problem = inputs.problem if broken is None else _edited(inputs, tmp, broken)
        out = tmp / "raw.h5"
        names = (f"{out} (not written): calibration",) if broken is None else (str(problem),)
        return Bad(["export-ismrmrd", str(problem), "-o", str(out), *flags], names)

    return case


def _zero_kspace(inputs: Inputs, tmp: Path) -> Bad:
    path = _edited(inputs, tmp, _replace("kspace/data", np.zeros_like))
    argv = ["recon", str(path), "-o", str(tmp / "out"), "--method", "fit"]
    return Bad(argv, (f"{path}: /kspace/data:", "no signal"))


def _recon_of(edit: Callable[[h5py.File], None], field: str) -> Case:
    def case(inputs: Inputs, tmp: Path) -> Bad:
        path = _edited(inputs, tmp, edit)
        argv = ["recon", str(path), "-o", str(tmp / "out"), "--method", "fit"]
        return Bad(argv, (f"{path}: {field}:",))

    return case


def _missing(inputs: Inputs, tmp: Path) -> Bad:
    path = tmp / "nope.h5"
    return Bad(["info", str(path)], (f"{path}: /:", "no such file"))


def _directory(inputs: Inputs, tmp: Path) -> Bad:
    path = tmp / "folder.h5"
    path.mkdir()
    return Bad(["info", str(path)], (f"{path}: /:", "a directory"))


def _with(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def make(values: np.ndarray) -> np.ndarray:
        changed = values.copy()
        changed.flat[0] = value
        return changed

    return make


def _twix(
    edit: Callable[[bytes], bytes] | None = None,
    *,
    protocol: str | None = None,
    flags: tuple[str, ...] = (),
    seq: str | None = None,
    sidecar: str | None = None,
    names: Callable[[Path, Path], tuple[str, ...]],
) -> Case:
    """``lorein import`` of a copy of the twix file (its bytes changed by ``edit``), with a
    ``.seq`` file and a sidecar holding the texts given, or of a new file of ``protocol``; the
    error names ``names(dat, tmp)``."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        dat = tmp / "meas.dat"
        if protocol is not None:
            _write_product(dat, protocol)
        data = dat.read_bytes() if protocol is not None else inputs.twix.read_bytes()
        dat.write_bytes(data if edit is None else edit(data))
        argv = ["import", str(dat), "-o", str(tmp / "p.h5"), "--signal-model", "vfa_megre"]
        if seq is not None:
            (tmp / "gre.seq").write_text(seq)
            argv += ["--seq", str(tmp / "gre.seq")]
        if sidecar is not None:
            (tmp / "seq.toml").write_text(sidecar)
            argv += ["--sidecar", str(tmp / "seq.toml")]
        return Bad([*argv, *flags], names(dat, tmp))

    return case


def _undersample(
    *flags: str, damaged: bool = False, names: Callable[[Path], tuple[str, ...]]
) -> Case:
    """``lorein undersample`` of the fully sampled problem (truncated when ``damaged``)."""

    def case(inputs: Inputs, tmp: Path) -> Bad:
        problem = _copy(inputs.full, tmp, "full.h5")
        if damaged:
            problem.write_bytes(problem.read_bytes()[: problem.stat().st_size // 2])
        return Bad(["undersample", str(problem), "-o", str(tmp / "r.h5"), *flags], names(problem))

    return case


TINY_LOREIN = "[lorein]\niterations = 2\n"

CASES: dict[str, Case] = {
    # the problem file: not a file, not HDF5, damaged HDF5
    "missing file": _missing,
    "a directory": _directory,
    "text, not HDF5": _bytes(lambda b: b"hello, not HDF5\n", "/"),
    "empty file": _bytes(lambda b: b"", "/"),
    "truncated to half": _bytes(lambda b: b[: len(b) // 2], "/"),
    "truncated recon": _bytes(lambda b: b[: len(b) // 2], "/", command="recon"),
    "vlen length of 4 GiB in /@format": _bytes(_vlen_length_bomb, "/@format"),
    "root B-tree address damaged (h5py RuntimeError)": _bytes(_group_tree_damaged, "/geometry"),
    "string type that crashes HDF5 (SIGSEGV)": _bytes(_vlen_class_damaged, "/@signal_model"),
    # the problem file: its attributes
    "format": _info(_attr("/", "format", "other"), "/@format"),
    "format_version 2": _info(_attr("/", "format_version", 2), "/@format_version"),
    "format_version text": _info(_attr("/", "format_version", "1"), "/@format_version"),
    "signal model": _info(_attr("/", "signal_model", "mese"), "/@signal_model"),
    "no geometry": _info(_delete("geometry"), "/geometry"),
    "matrix of 2": _info(_attr("geometry", "matrix", np.array([24, 24])), "/geometry@matrix"),
    "matrix negative": _info(
        _attr("geometry", "matrix", np.array([24, -24, 4])), "/geometry@matrix"
    ),
    "voxel size 0": _info(_attr("geometry", "voxel_size", np.zeros(3)), "/geometry@voxel_size"),
    "affine singular": _info(_attr("geometry", "affine", np.zeros((4, 4))), "/geometry@affine"),
    "affine NaN": _info(_attr("geometry", "affine", np.full((4, 4), np.nan)), "/geometry@affine"),
    # the problem file: k-space
    "kspace real": _info(_replace("kspace/data", np.real), "/kspace/data"),
    "kspace nx": _info(_replace("kspace/data", lambda v: v[..., :-1]), "/kspace/data"),
    "kspace NaN": _info(_replace("kspace/data", _with(np.nan)), "/kspace/data"),
    "kspace a group": _info(_group_for("kspace/data"), "/kspace/data"),
    "kspace declaring 1e9 lines": _info(
        _declared("kspace/data", (10**9, 4, 24), "complex64"), "/kspace/data"
    ),
    "ky declaring 1e9 lines": _info(_declared("kspace/ky", (10**9,), "int32"), "/kspace/ky"),
    "ky outside the grid": _info(_replace("kspace/ky", _with(99)), "/kspace/ky"),
    "ky float": _info(_replace("kspace/ky", lambda v: v.astype(np.float32)), "/kspace/ky"),
    "ky in another file": _info(_external_ky, "/kspace/ky"),
    "ky linked to another file": _info(_external_link_ky, "/kspace/ky"),
    "kz one short": _info(_replace("kspace/kz", lambda v: v[:-1]), "/kspace/kz"),
    "contrast outside the table": _info(_replace("kspace/contrast", _with(60)), "/kspace/contrast"),
    "coils of another shape": _info(
        lambda f: f.create_dataset("coils", data=np.ones((3, 4, 24, 24), np.complex64)), "/coils"
    ),
    # the problem file: the contrast table
    "flip angle one row short": _info(
        _replace("contrasts/flip_angle", lambda v: v[:-1]), "/contrasts/flip_angle"
    ),
    "flip angle 172 deg": _info(
        _replace("contrasts/flip_angle", lambda v: np.full_like(v, 3.0)), "/contrasts/flip_angle"
    ),
    "flip angle in degrees": _info(
        _replace("contrasts/flip_angle", np.degrees), "/contrasts/flip_angle"
    ),
    "echo time in ms": _info(
        _replace("contrasts/echo_time", lambda v: v * 1e3), "/contrasts/echo_time"
    ),
    "echo time 1000x short": _info(
        _replace("contrasts/echo_time", lambda v: v * 1e-3), "/contrasts/echo_time"
    ),
    "echo time after TR": _info(
        _replace("contrasts/echo_time", _with(0.05)), "/contrasts/echo_time"
    ),
    "no repetition time": _info(_delete("contrasts/repetition_time"), "/contrasts/repetition_time"),
    "repetition time 0.046 ms": _info(
        _replace("contrasts/repetition_time", lambda v: v * 1e-3), "/contrasts/repetition_time"
    ),
    # recon of a bad problem: nothing created
    "recon of NaN k-space": _recon_of(_replace("kspace/data", _with(np.nan)), "/kspace/data"),
    "recon of all-zero k-space": _zero_kspace,
    "recon of k-space x 1e30": _recon_of(
        _replace("kspace/data", lambda v: v * 1e30), "/kspace/data"
    ),
    "recon of a truncated flip table": _recon_of(
        _replace("contrasts/flip_angle", lambda v: v[:-1]), "/contrasts/flip_angle"
    ),
    # configuration files
    "lr = -1": _config(TINY_LOREIN + "lr = -1\n"),
    "lr = 0": _config(TINY_LOREIN + "lr = 0.0\n"),
    "lr = nan": _config(TINY_LOREIN + "lr = nan\n"),
    "decay_every = 0": _config(TINY_LOREIN + "decay_every = 0\n"),
    "iterations = -1": _config("[lorein]\niterations = -1\n"),
    "hidden = 0": _config(TINY_LOREIN + "hidden = 0\n"),
    "dc1 = -1": _config(TINY_LOREIN + "dc1 = -1.0\n"),
    "coil_compression > coils": _config("[fit]\ncoil_compression = 99\n", "fit"),
    "coil_compression = 0": _config(TINY_LOREIN + "coil_compression = 0\n"),
    "unknown key": _config(TINY_LOREIN + "learning_rate = 0.1\n"),
    "typo in a hash-encoding table": _config(
        TINY_LOREIN + "map_encoding = { n_level = 2 }\n", "lorein", "n_level"
    ),
    "growth below 1": _config(
        TINY_LOREIN + "map_encoding = { growth = 0.5 }\n", "lorein", "growth"
    ),
    "text for a number": _config('[lorein]\niterations = "ten"\n'),
    "[recon] unknown key": _config("[recon]\nthreads = 4\n", "fit"),
    "[recon] seed = -1": _config("[recon]\nseed = -1\n", "fit"),
    "method table not a table": _config("lorein = 3\n", "lorein", "lorein must be a table"),
    "not TOML": _config("[lorein\nlr = 0.1\n", "lorein", "not valid TOML"),
    "not UTF-8": _non_utf8_config,
    "missing configuration": _missing_config,
    # flags
    "--device tpu": _recon("--device", "tpu", names=("--device tpu",)),
    "--method nope": _recon("--method", "nope", names=("method 'nope'",)),
    "--iterations -5": _recon("--method", "lrt", "--iterations", "-5", names=("iterations",)),
    "--seed -1": _recon("--method", "fit", "--seed", "-1", names=("--seed",)),
    "--bogus": _recon("--bogus", names=("--bogus",)),
    "-o is a file": _output_is_a_file,
    "--snr -1": _simulate("--preset", "sim1-small", "--R", "27", "--snr", "-1", names=("snr",)),
    "--snr 0": _simulate("--preset", "sim1-small", "--R", "27", "--snr", "0", names=("snr",)),
    "--snr nan": _simulate("--preset", "sim1-small", "--R", "27", "--snr", "nan", names=("snr",)),
    "--R 0": _simulate("--preset", "sim1-small", "--R", "0", names=("--R",)),
    "--R missing": _simulate("--preset", "sim1-small", names=("--R",)),
    "--preset nope": _simulate("--preset", "sim3", "--R", "4", names=("preset 'sim3'",)),
    "export --calibration 0 0": _export("--calibration", "0", "0"),
    "export of NaN k-space": _export(broken=_replace("kspace/data", _with(np.nan))),
    # sidecars of lorein import
    "sidecar TE in seconds": _sidecar("echo_time_ms = 0.0046\n", "echo_time_ms"),
    "sidecar flip in radians": _sidecar("flip_angle_deg = 0.2\n", "flip_angle_deg"),
    "sidecar TR in seconds": _sidecar("repetition_time_ms = 0.046\n", "repetition_time_ms"),
    "sidecar flip 172 deg": _sidecar("flip_angle_deg = 172.0\n", "flip_angle_deg"),
    "sidecar unknown key": _sidecar("echo_time = 4.6\n", "echo_time"),
    "sidecar count": _sidecar("echo_time_ms = [4.6, 9.2]\n", "echo_time_ms"),
    "sidecar text": _sidecar('flip_angle_deg = "ten"\n', "flip_angle_deg"),
    "sidecar signal model": _sidecar('signal_model = "mese"\n', "signal_model"),
    "sidecar not TOML": _sidecar("echo_time_ms = [4.6\n", "not valid TOML"),
    "sidecar missing": _missing_sidecar,
    "[import] TE in seconds": _import_table,
    # ISMRMRD raw data
    "raw is a problem file": lambda i, t: Bad(
        ["import", str(i.problem), "-o", str(t / "p.h5")], (f"{i.problem}: /dataset:",)
    ),
    "raw truncated": _raw(lambda r: r.write_bytes(r.read_bytes()[:4000]), "/"),
    "raw without XML": _raw(_in_file(_delete("dataset/xml")), "/dataset/xml"),
    "raw XML not a number": _raw(_xml(lambda t: t.replace("<TE>", "<TE>2u", 1)), "/dataset/xml"),
    "raw XML billion laughs": _raw(_xml(_laughs), "/dataset/xml"),
    "raw header TE in seconds": _raw(
        _header(_te_in_seconds_in_the_header), "/dataset/xml sequenceParameters/TE"
    ),
    "raw heads declaring 65535 x 65535 samples": _raw(
        _heads(number_of_samples=65535, active_channels=65535),
        "/dataset/data",
    ),
    # Siemens raw data (twix) and Pulseq sequences
    "twix truncated": _twix(lambda b: b[: len(b) - 2000], names=lambda d, t: (f"{d}: MDH:",)),
    "twix: a text file named .dat": _twix(
        lambda b: b"TE = 4 ms\n", names=lambda d, t: (f"{d}: /:", "Siemens twix")
    ),
    "twix: an empty .dat": _twix(lambda b: b"", names=lambda d, t: (f"{d}: /:",)),
    "twix protocol TE of 3 us": _twix(
        protocol=PRODUCT.replace("alTE[0] = 3000", "alTE[0] = 3"),
        names=lambda d, t: (f"{d}: protocol sequenceParameters/TE:", "plausible echo times"),
    ),
    "twix protocol base resolution 0": _twix(
        protocol=PRODUCT.replace("lBaseResolution = 8", "lBaseResolution = 0"),
        names=lambda d, t: (f"{d}: protocol sKSpace.lBaseResolution:",),
    ),
    "twix sidecar TE in seconds": _twix(
        sidecar="echo_time_ms = 0.003\n",
        names=lambda d, t: (f"{t / 'seq.toml'}: echo_time_ms:", "looks like s"),
    ),
    "twix sidecar echoes_per_excitation 0": _twix(
        sidecar="echoes_per_excitation = 0\n",
        names=lambda d, t: (f"{t / 'seq.toml'}: echoes_per_excitation:",),
    ),
    ".seq without [BLOCKS]": _twix(
        seq="[VERSION]\nmajor 1\nminor 4\n[DEFINITIONS]\nFOV 0.2 0.2 0.003\n[RF]\n[ADC]\n"
        "[SHAPES]\n",
        names=lambda d, t: (f"{t / 'gre.seq'}: [BLOCKS]:", "expected the section"),
    ),
    ".seq of another format": _twix(
        seq="[VERSION]\nmajor 1\nminor 5\n", names=lambda d, t: (f"{t / 'gre.seq'}: [VERSION]:",)
    ),
    ".seq missing": _twix(
        flags=("--seq", "nope.seq"), names=lambda d, t: ("nope.seq: /:", "no such file")
    ),
    # lorein undersample
    "undersample R below 1": _undersample("--R", "0.5", names=lambda p: ("--R = 0.5",)),
    "undersample R not finite": _undersample("--R", "nan", names=lambda p: ("--R = nan",)),
    "undersample R beyond the grid": _undersample(
        "--R", "40", names=lambda p: ("--R 40", "cannot sample")
    ),
    "undersample seed negative": _undersample(
        "--R", "2", "--seed", "-1", names=lambda p: ("--seed = -1",)
    ),
    "undersample not fully sampled": lambda i, t: Bad(
        ["undersample", str(i.problem), "-o", str(t / "r.h5"), "--R", "2"],
        (f"{i.problem}: /kspace:", "fully sampled"),
    ),
    "undersample damaged problem": _undersample(
        "--R", "2", damaged=True, names=lambda p: (f"{p}: /:",)
    ),
    "undersample of a raw file": lambda i, t: Bad(
        ["undersample", str(i.raw), "-o", str(t / "r.h5"), "--R", "2"], (f"{i.raw}: /",)
    ),
    # checkpoints of --resume
    "checkpoint that runs code": _checkpoint(
        lambda p, i: crafted_checkpoint(p, p.with_name("marker")), "refers to exec"
    ),
    "checkpoint truncated": _checkpoint(
        lambda p, i: p.write_bytes(b"PK\x03\x04 cut short"), "truncated or damaged"
    ),
    "checkpoint not a dict": _checkpoint(lambda p, i: torch.save([1, 2], p), "holds a list"),
    "checkpoint of another seed": _checkpoint(_of_seed_one, "seed 1 (this run: 0)"),
    "resume without checkpoint": _resume_without_checkpoint,
    # lorein eval: output folders and truths
    "maps.h5 not HDF5": _eval(_maps_not_hdf5, lambda o, t: (f"{o / 'maps.h5'}: /:",)),
    "maps.h5 complex": _eval(_complex_map, lambda o, t: (f"{o / 'maps.h5'}: /T1:",)),
    "truth absent": _eval(_without_truth, lambda o, t: (f"{t}: /truth:",)),
    "truth purity above 1": _eval(_purity_above_one, lambda o, t: (f"{t}: /truth/purity:",)),
    "truth of another grid": _other_grid,
    "eval --maps unknown": lambda i, t: Bad(
        ["eval", str(_output(i, t)), "--truth", str(i.problem), "--maps", "T9"], ("--maps", "T9")
    ),
    # Ctrl-C
    "interrupted": _interrupted,
}


def _snapshot(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` (hidden ones included) with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def test_the_table_holds_at_least_60_bad_inputs() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_line_naming_file_and_field_and_leaves_nothing(
    name: str,
    inputs: Inputs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = CASES[name](inputs, tmp_path)
    if bad.patch is not None:
        bad.patch(monkeypatch)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    status = main(bad.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == bad.status, err
    assert len(lines) == 1, err
    assert ("interrupted" if bad.status == 130 else "error:") in lines[0]
    for named in bad.names:
        assert named in lines[0]
    assert _snapshot(tmp_path) == before
