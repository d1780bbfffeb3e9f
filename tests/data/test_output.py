"""Output folder: contract layout, NIfTI orientation and units, weighted images on request,
atomic replacement: the previous results survive a failure at any step of a publish and a kill
between any two of its steps, a killed publish is put back, one run at a time holds a folder's
lock."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from lorein.data.output import (
    LOCK_GRACE_SECONDS,
    Maps,
    OutputLockedError,
    output_lock,
    recover_output,
    replacing,
    write_output,
    write_text_atomic,
)
from lorein.physics.contrasts import ContrastTable


def _maps() -> Maps:
    z, y, x = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), torch.arange(6.0), indexing="ij")
    return Maps(values={"T1": 1 + x / 10, "T2star": 0.05 + 0 * x, "B0": y, "M0": z + 1})


def test_layout_and_orientation(tmp_path: Path) -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [-6, -6, -8]
    out = tmp_path / "out"
    write_output(out, _maps(), affine, {"method": "test", "seconds": 1.0}, method="test")
    with h5py.File(out / "maps.h5") as f:
        assert f["T1"].shape == (4, 5, 6) and f["T1"].dtype == np.float32
    img = nib.load(out / "nifti" / "T1map.nii.gz")
    assert img.shape == (6, 5, 4)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert np.allclose(img.header.get_zooms(), (2.0, 3.0, 4.0))
    data = img.get_fdata()
    assert np.allclose(data[:, 0, 0], 1 + np.arange(6) / 10)  # x varies along the first axis
    assert np.allclose(nib.load(out / "nifti" / "B0map.nii.gz").get_fdata()[0, :, 0], np.arange(5))
    sidecar = json.loads((out / "nifti" / "B0map.json").read_text())
    assert sidecar["Units"] == "Hz"
    assert json.loads((out / "report.json").read_text())["seconds"] == 1.0
    assert not (out / "nifti" / "T2map.nii.gz").exists()  # no T2 map was given


def test_weighted_images_only_on_request(tmp_path: Path) -> None:
    affine = np.diag([-2.0, 3.0, 4.0, 1.0])  # x runs right to left: L, A, S
    maps = _maps()
    x = torch.arange(6.0)
    phase = torch.tensor([-3.0, 0.5, 2.0])[:, None, None, None]
    maps.images = ((1 + x) * torch.exp(1j * phase)).expand(3, 4, 5, 6).to(torch.complex64)
    contrasts = ContrastTable(
        flip_angle=torch.tensor([math.pi / 2, math.pi / 4, math.pi / 4]),
        echo_time=torch.tensor([0.001, 0.002, 0.003]),
        repetition_time=torch.full((3,), 0.01),
        prep_time=torch.tensor([0.0, 0.0, 0.05]),
        segment=torch.tensor([1, 2, 1]),
    )
    out = tmp_path / "out"
    write_output(out, maps, affine, {}, method="test", contrasts=contrasts)
    mag = nib.load(out / "nifti" / "weighted_mag.nii.gz")
    assert mag.shape == (6, 5, 4, 3) and mag.get_data_dtype() == np.float32
    assert nib.aff2axcodes(mag.affine) == ("L", "A", "S")
    assert np.allclose(mag.affine, nib.load(out / "nifti" / "T1map.nii.gz").affine)
    assert np.allclose(mag.get_fdata()[:, 0, 0, 1], 1 + np.arange(6))  # x along the first axis
    angle = nib.load(out / "nifti" / "weighted_phase.nii.gz").get_fdata()
    assert np.allclose(angle[2, 1, 3, :], [-3.0, 0.5, 2.0], atol=1e-6)  # one volume per contrast
    sidecar = json.loads((out / "nifti" / "weighted_phase.json").read_text())
    assert (sidecar["Units"], sidecar["ImageComponent"], sidecar["Volumes"]) == ("rad", "phase", 3)
    assert sidecar["FlipAngle"] == [90.0, 45.0, 45.0] and sidecar["EchoTime"] == [
        0.001,
        0.002,
        0.003,
    ]
    assert sidecar["T2PrepTime"] == [0.0, 0.0, 0.05] and sidecar["Segment"] == [1, 2, 1]
    assert sidecar["ContrastUnits"]["FlipAngle"] == "deg"
    write_output(out, maps, affine, {}, method="test")  # again, without asking for the images
    assert not list((out / "nifti").glob("weighted*"))


def test_failure_leaves_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(out, _maps(), np.eye(4), {"run": 1}, method="test")
    (out / "checkpoint.pt").write_text("keep")
    bad = Maps(values={"T1": torch.zeros(2, 2, 2)})
    with pytest.raises(TypeError):
        write_output(out, bad, np.eye(4), {"run": object.__new__(_Unserialisable)}, method="x")
    assert json.loads((out / "report.json").read_text()) == {"run": 1}
    assert (out / "checkpoint.pt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


class _Unserialisable:
    def __str__(self) -> str:
        raise TypeError("cannot serialise")


def _published(out: Path) -> tuple[dict, np.ndarray]:
    """The report and the T1 map of a complete output folder."""
    with h5py.File(out / "maps.h5") as f:
        t1 = f["T1"][()]
    assert (out / "nifti" / "T1map.nii.gz").is_file()
    return json.loads((out / "report.json").read_text()), t1


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


class _Faults:
    """Wraps ``os.rename``, ``os.replace``, ``os.link`` and ``shutil.rmtree``: the ``fail_at``-th
    call of any of them raises ``OSError``; ``calls`` records every call's name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
        self.calls: list[str] = []
        self.failed: str | None = None
        for module, name in ((os, "rename"), (os, "replace"), (os, "link"), (shutil, "rmtree")):
            monkeypatch.setattr(module, name, self._wrap(name, getattr(module, name), fail_at))

    def _wrap(self, name: str, real, fail_at: int):
        def call(*args, **kwargs):
            self.calls.append(name)
            if len(self.calls) - 1 == fail_at:
                self.failed = name
                raise OSError(f"injected failure of {name}")
            return real(*args, **kwargs)

        return call


def test_publish_keeps_the_previous_results_whatever_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_maps = Maps(values={k: v + 1 for k, v in _maps().values.items()})
    failed_steps = []
    for step in range(50):
        parent = tmp_path / f"step{step}"
        out = parent / "out"
        write_output(out, _maps(), np.eye(4), {"run": 1}, method="test")
        (out / "eval.json").write_text("{}")  # written by lorein eval beside the maps
        (out / "checkpoint.pt").write_text("checkpoint")
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            faults = _Faults(patch, step)
            try:
                write_output(out, new_maps, np.eye(4), {"run": 2}, method="test")
                raised = False
            except OSError:
                raised = True
        if faults.failed is None:  # every step of the publish has had its turn
            break
        failed_steps.append(faults.failed)
        report, t1 = _published(out)
        if raised:  # the previous results are intact at OUT, the checkpoint with them
            assert report == {"run": 1} and np.allclose(t1, _maps().values["T1"].numpy())
            assert (out / "checkpoint.pt").read_text() == "checkpoint"
        else:  # a link fell back to a copy, or the old folder stayed (a warning): published
            assert report == {"run": 2} and np.allclose(t1, new_maps.values["T1"].numpy())
            removal = [w for w in warned if "could not remove the previous" in str(w.message)]
            assert faults.failed == "link" or (faults.failed == "rmtree" and removal)
        assert (out / "eval.json").read_text() == "{}"
        write_output(out, new_maps, np.eye(4), {"run": 3}, method="test")
        assert _published(out)[0] == {"run": 3}
        assert _hidden(parent) == [] and sorted(p.name for p in parent.iterdir()) == ["out"]
    else:
        pytest.fail("the publish never got past the injected failures")
    assert failed_steps == ["link", "rename", "rename", "rmtree"]  # eval.json, swap, old


def test_a_publish_killed_at_any_step_leaves_results_that_the_next_run_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 runs no cleanup: the folder is copied as it is before every file-system step of
    a publish (what a kill then leaves); in every copy the next run, after putting back what
    the kill left (its first step), finds the previous results or the new ones, whole, and
    leaves no temporary folder."""
    live = tmp_path / "live"
    out = live / "out"
    write_output(out, _maps(), np.eye(4), {"run": 1}, method="test")
    (out / "eval.json").write_text("{}")
    (out / "checkpoint.pt").write_text("checkpoint")
    states: list[Path] = []
    copying = [False]

    def snapshot() -> None:
        copying[0] = True
        try:
            states.append(Path(shutil.copytree(live, tmp_path / f"killed{len(states)}")))
        finally:
            copying[0] = False

    def before(real):
        def call(*args, **kwargs):
            if not copying[0]:
                snapshot()
            return real(*args, **kwargs)

        return call

    new_maps = Maps(values={k: v + 1 for k, v in _maps().values.items()})
    with monkeypatch.context() as patch:
        for module, name in ((os, "mkdir"), (os, "rename"), (os, "replace"), (os, "link")):
            patch.setattr(module, name, before(getattr(module, name)))
        for name in ("rmtree", "copy2"):
            patch.setattr(shutil, name, before(getattr(shutil, name)))
        write_output(out, new_maps, np.eye(4), {"run": 2}, method="test")
    snapshot()
    assert len(states) >= 6  # temporary folder, nifti/, eval.json, two renames, removal, done
    seen = set()
    for state in states:
        killed = state / "out"
        recover_output(killed)
        report, t1 = _published(killed)
        seen.add(report["run"])
        expected = _maps() if report == {"run": 1} else new_maps
        assert report in ({"run": 1}, {"run": 2})
        assert np.allclose(t1, expected.values["T1"].numpy())
        assert (killed / "eval.json").read_text() == "{}"
        if report == {"run": 1}:
            assert (killed / "checkpoint.pt").read_text() == "checkpoint"
        write_output(killed, new_maps, np.eye(4), {"run": 3}, method="test")
        assert _published(killed)[0] == {"run": 3}
        assert _hidden(state) == [] and [p.name for p in state.iterdir()] == ["out"]
    assert seen == {1, 2}


def test_the_checkpoint_is_published_only_when_kept_and_never_copied(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(out, _maps(), np.eye(4), {"run": 1}, method="test")
    (out / "checkpoint.pt").write_text("checkpoint")
    (out / "eval.json").write_text("{}")
    inode = (out / "checkpoint.pt").stat().st_ino
    write_output(out, _maps(), np.eye(4), {"run": 2}, method="test", keep_checkpoint=True)
    assert (out / "checkpoint.pt").stat().st_ino == inode  # the same file, not a copy
    assert (out / "eval.json").read_text() == "{}"
    write_output(out, _maps(), np.eye(4), {"run": 3}, method="test")
    assert not (out / "checkpoint.pt").exists() and (out / "eval.json").exists()
    assert _hidden(tmp_path) == []


def test_a_publish_killed_between_its_renames_is_put_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(out, _maps(), np.eye(4), {"run": 1}, method="test")
    os.rename(out, tmp_path / ".out.old-k1ll3d_x")  # killed after the first rename
    (tmp_path / ".out.new-k1ll3d_x").mkdir()
    (tmp_path / ".out.new-0ther_ru").mkdir()  # and an earlier publish killed while writing
    (tmp_path / ".other.new-abcdefgh").mkdir()  # another folder's: not touched
    recover_output(out)
    assert _published(out)[0] == {"run": 1}
    assert _hidden(tmp_path) == [".other.new-abcdefgh"]
    os.rename(out, tmp_path / ".out.old-k1ll3d_x")
    write_output(out, _maps(), np.eye(4), {"run": 2}, method="test")  # recovers first
    assert _published(out)[0] == {"run": 2} and _hidden(tmp_path) == [".other.new-abcdefgh"]


def test_a_second_holder_of_the_lock_fails_at_once_a_stale_lock_is_taken_over(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    with output_lock(out):
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}") as caught:
            with output_lock(out):
                pass
        assert "\n" not in str(caught.value) and str(lock) in str(caught.value)
    assert not lock.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lock.write_text(f"{dead} {socket.gethostname()}\n")  # its process has exited
    with output_lock(out):
        assert lock.read_text().split()[0] == str(os.getpid())
    lock.write_text(f"1 {socket.gethostname()}-elsewhere\n")  # cannot be checked from here
    with pytest.raises(OutputLockedError, match="on .*-elsewhere"):
        with output_lock(out):
            pass
    lock.write_text("")  # a writer that died between creating and filling it ...
    with pytest.raises(OutputLockedError, match="starting"):  # ... or is filling it now
        with output_lock(out):
            pass
    old = time.time() - 2 * LOCK_GRACE_SECONDS
    os.utime(lock, (old, old))
    with output_lock(out):
        pass
    assert list(tmp_path.iterdir()) == []


def test_single_files_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]
