"""Basis CNN: identity at initialisation, shapes (odd sizes), scale equivariance, bases interact."""

import torch

from lorein.methods.lorein.basis_cnn import BasisCNN
from tests.helpers import randn_complex


def test_starts_as_identity_and_keeps_shape() -> None:
    torch.manual_seed(0)
    net = BasisCNN(channels=4)
    u = randn_complex(3, 2, 7, 9, seed=1)
    out = net(u)
    assert out.shape == u.shape and out.dtype == torch.complex64
    torch.testing.assert_close(out, u)


def _trained_net() -> BasisCNN:
    torch.manual_seed(0)
    net = BasisCNN(channels=4)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net


def test_scale_equivariant() -> None:
    net = _trained_net()
    u = randn_complex(3, 2, 8, 6, seed=2)
    torch.testing.assert_close(net(1000 * u), 1000 * net(u), rtol=1e-4, atol=1e-2)


def test_shared_attention_couples_bases() -> None:
    """Changing basis 0 changes the refinement of basis 1 (through the shared features)."""
    net = _trained_net()
    u = randn_complex(3, 2, 8, 8, seed=3)
    v = u.clone()
    v[0] = randn_complex(2, 8, 8, seed=4)
    assert (net(u)[1] - net(v)[1]).abs().max() > 1e-4
    # and without the attention there is no coupling (weights shared per basis)
    net.attention.gate.weight.data.zero_()
    net.attention.gate.bias.data.fill_(-1e4)
    torch.testing.assert_close(net(u)[1], net(v)[1])
