"""A pretend CUDA device on the CPU, for testing device placement without a GPU.

Inside :func:`fake_cuda`, a tensor sent to ``"cuda"`` (``.to``, ``.cuda()``, a factory's
``device=``) stays on the CPU but is recorded as a CUDA tensor: its ``.device`` says ``cuda:0``,
everything computed from it is recorded too, and an operation that mixes it with a CPU tensor of
one or more dimensions raises the error a real GPU would raise (indexing a CUDA tensor with CPU
indices and copies across devices are allowed, as on a GPU). ``torch.cuda`` answers as one small
GPU would. What this cannot see: kernels that exist on one device only, and numerical
differences; the CUDA tests (``-m cuda``) cover those on a real GPU.

A tensor is on the pretend GPU when its storage is recorded (weakly: a storage that is freed
leaves the record; a parameter that wraps a recorded tensor shares its storage).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode

CUDA = torch.device("cuda", 0)
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}
_CROSS_DEVICE = {"copy_", "_has_compatible_shallow_copy_type", "__set__"}  # param.data = moved


class DeviceMismatchError(RuntimeError):
    """An operation mixed tensors of the pretend GPU and of the CPU."""


def _is_cuda(device: Any) -> bool:
    return isinstance(device, str | torch.device) and torch.device(device).type == "cuda"


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class FakeCudaMode(TorchFunctionMode):
    """The function mode behind :func:`fake_cuda`."""

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, weakref.ref] = {}

    def is_fake(self, t: torch.Tensor) -> bool:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        ref = self._storages.get(key)
        return key != 0 and ref is not None and ref() is storage

    def mark(self, out: Any) -> None:
        for t in _tensors(out):
            storage = t.untyped_storage()
            if storage.data_ptr():
                self._storages[storage.data_ptr()] = weakref.ref(storage)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", str(func))
        if func == torch.Tensor.device.__get__:
            return CUDA if self.is_fake(args[0]) else func(*args)
        if func == torch.Tensor.is_cuda.__get__:
            return self.is_fake(args[0])
        to_device = self._target(func, args, kwargs)
        if to_device is not None:  # a move: a copy when the device changes
            source = args[0]
            out = source
            if func is torch.Tensor.to:
                if "device" in kwargs:
                    kwargs["device"] = "cpu"
                out = func(*self._to_cpu_args(args), **kwargs)
            if out is source and to_device != self.is_fake(source):
                out = source.clone()
            if to_device:
                self.mark(out)
            return out
        if _is_cuda(kwargs.get("device")):  # a factory on the device
            kwargs["device"] = "cpu"
            out = func(*args, **kwargs)
            self.mark(out)
            return out
        tensors = list(_tensors(args)) + list(_tensors(kwargs))
        fake = [self.is_fake(t) for t in tensors]
        if any(fake) and name not in _CROSS_DEVICE:
            self._check(func, name, args, tensors, fake)
        if func is torch.Tensor.numpy and any(fake):
            raise DeviceMismatchError("can't convert a cuda tensor to numpy (use .cpu() first)")
        out = func(*args, **kwargs)
        if any(fake):
            inplace = name.endswith("_") and not name.endswith("__")
            if not inplace or fake[0]:
                self.mark(out)
        return out

    def _check(self, func, name: str, args, tensors, fake) -> None:  # noqa: ANN001
        if func in _INDEXING:
            base = args[0]
            indices = list(_tensors(args[1]))
            if not self.is_fake(base) and any(self.is_fake(i) for i in indices):
                raise DeviceMismatchError(f"{name}: cuda indices into a cpu tensor")
            return
        plain = [t for t, f in zip(tensors, fake, strict=True) if not f and t.dim() > 0]
        if plain:
            shapes = ", ".join(str(tuple(t.shape)) for t in plain[:3])
            raise DeviceMismatchError(
                f"{name}: expected all tensors on one device, got cuda and cpu (cpu: {shapes})"
            )

    def _target(self, func, args, kwargs) -> bool | None:  # noqa: ANN001
        """For a move (``.to``, ``.cuda``, ``.cpu``): whether it goes to the device; else None."""
        if func is torch.Tensor.cuda:
            return True
        if func is torch.Tensor.cpu:
            return False
        if func is not torch.Tensor.to:
            return None
        candidates = [*args[1:], kwargs.get("device")]
        for c in candidates:
            if isinstance(c, torch.Tensor):
                return self.is_fake(c)
            if isinstance(c, str | torch.device):
                return _is_cuda(c)
        return None  # a dtype change only

    @staticmethod
    def _to_cpu_args(args: tuple) -> tuple:
        """``Tensor.to``'s arguments with the device made the CPU (a tensor: its dtype)."""
        rest = tuple(
            "cpu" if isinstance(a, str | torch.device) else a.dtype if torch.is_tensor(a) else a
            for a in args[1:]
        )
        return (args[0], *rest)


_REAL_GENERATOR = torch.Generator


class _Generator(_REAL_GENERATOR):
    """``torch.Generator(device="cuda")`` gives a CPU generator (the pretend GPU's numbers)."""

    def __new__(cls, device: Any = "cpu") -> torch.Generator:  # noqa: ARG004
        return _REAL_GENERATOR()


@contextlib.contextmanager
def fake_cuda() -> Iterator[FakeCudaMode]:
    """Pretend that one CUDA device exists (module docstring)."""
    mode = FakeCudaMode()
    gib = 2**30
    with contextlib.ExitStack() as stack:
        for name, value in {
            "is_available": lambda: True,
            "device_count": lambda: 1,
            "mem_get_info": lambda device=None: (16 * gib, 16 * gib),
            "max_memory_allocated": lambda device=None: 0,
            "reset_peak_memory_stats": lambda device=None: None,
            "get_device_name": lambda device=None: "pretend GPU (tests/fake_cuda.py)",
            "synchronize": lambda device=None: None,
        }.items():
            stack.enter_context(mock.patch.object(torch.cuda, name, value))
        stack.enter_context(mock.patch.object(torch, "Generator", _Generator))
        stack.enter_context(mode)
        yield mode
