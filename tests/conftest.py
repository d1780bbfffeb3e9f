"""Pytest configuration: deterministic torch, CUDA tests skipped without a GPU."""

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
