"""Output folder: contract layout, NIfTI orientation and units, weighted images on request,
atomic replacement."""

import json
import math
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from lorein.data.output import Maps, write_output
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
