"""The pretend GPU of tests/fake_cuda.py raises where a real one would, and only there."""

import pytest
import torch

from tests.fake_cuda import DeviceMismatchError, fake_cuda

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a real GPU is here")


def test_moved_tensors_report_the_device_and_mixing_raises() -> None:
    with fake_cuda():
        host = torch.ones(3)
        gpu = host.to("cuda")
        assert host.device.type == "cpu" and gpu.device == torch.device("cuda", 0) and gpu.is_cuda
        assert (gpu * 2).device.type == "cuda" and gpu.sum().device.type == "cuda"
        assert torch.zeros(2, device=gpu.device).device.type == "cuda"
        assert (gpu + torch.tensor(2.0)).device.type == "cuda"  # a CPU scalar is allowed
        with pytest.raises(DeviceMismatchError, match="add"):
            gpu + host  # noqa: B018
        with pytest.raises(DeviceMismatchError, match="cpu tensor"):
            host[torch.tensor([0]).cuda()]  # noqa: B018
        assert gpu[torch.tensor([0, 2])].device.type == "cuda"  # CPU indices into the GPU: fine
        assert gpu.cpu().device.type == "cpu" and gpu.to(host).device.type == "cpu"
        host.copy_(gpu)  # copies cross devices
        with pytest.raises(DeviceMismatchError, match="numpy"):
            gpu.numpy()


def test_modules_train_on_the_device() -> None:
    with fake_cuda():
        layer = torch.nn.Linear(3, 2).to("cuda")
        x = torch.randn(4, 3, device="cuda")
        optimiser = torch.optim.Adam(layer.parameters(), 1e-2)
        layer(x).square().sum().backward()
        optimiser.step()
        assert layer.weight.device.type == "cuda" and layer.weight.grad.device.type == "cuda"
        with pytest.raises(DeviceMismatchError):
            layer(torch.randn(4, 3))
        wrapped = torch.nn.Parameter(x.clone())  # shares the moved storage
        assert wrapped.device.type == "cuda"
        generator = torch.Generator(device="cuda").manual_seed(0)
        assert torch.randn(2, generator=generator, device="cuda").device.type == "cuda"
