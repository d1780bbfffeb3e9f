"""Output folder: contract layout, NIfTI orientation and units, atomic replacement."""

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from lorein.data.output import Maps, write_output


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
