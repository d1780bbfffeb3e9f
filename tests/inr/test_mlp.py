"""MLP: layer structure, chunked evaluation equal to the unchunked one (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorein.inr.mlp import MLP
from tests.helpers import rng


def test_structure() -> None:
    mlp = MLP(32, 5, hidden=16, n_hidden_layers=3, activation=nn.Tanh)
    linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (32, 16),
        (16, 16),
        (16, 16),
        (16, 5),
    ]
    assert sum(isinstance(m, nn.Tanh) for m in mlp.net) == 3
    assert isinstance(mlp.net[-1], nn.Linear)  # linear output layer
    assert len(MLP(4, 2, n_hidden_layers=0).net) == 1


@pytest.mark.parametrize("n_rows", [7, 10, 23])
def test_chunked_equals_unchunked(n_rows: int) -> None:
    torch.manual_seed(0)
    chunked = MLP(6, 3, hidden=8, chunk_size=5)
    whole = MLP(6, 3, hidden=8, chunk_size=None)
    whole.load_state_dict(chunked.state_dict())
    x = torch.randn(n_rows, 6, generator=rng(1), requires_grad=True)
    grad_out = torch.randn(n_rows, 3, generator=rng(2))
    results = []
    for mlp in (chunked, whole):
        out = mlp(x)
        grads = torch.autograd.grad(out, [x, *mlp.parameters()], grad_out)
        results.append((out, grads))
    assert results[0][0].shape == (n_rows, 3)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    for g_chunked, g_whole in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(g_chunked, g_whole, rtol=1e-5, atol=1e-6)


def test_relu_network_values() -> None:
    """One hidden layer with known weights: relu(x W1^T + b1) W2^T + b2."""
    mlp = MLP(2, 1, hidden=2, n_hidden_layers=1, chunk_size=1)
    with torch.no_grad():
        mlp.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        mlp.net[0].bias.zero_()
        mlp.net[2].weight.copy_(torch.tensor([[2.0, 3.0]]))
        mlp.net[2].bias.fill_(0.5)
    out = mlp(torch.tensor([[1.0, 1.0], [-1.0, -2.0]]))
    torch.testing.assert_close(out, torch.tensor([[2.5], [6.5]]))


def test_invalid_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        MLP(2, 2, chunk_size=0)
