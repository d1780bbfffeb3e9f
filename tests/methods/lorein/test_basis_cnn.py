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


def test_slab_refines_its_planes_as_the_whole_volume() -> None:
    """Refined on its widened slab with the volume's scale and cropped, a slab of x-planes is
    the slab of the whole volume's refinement (odd starts and an odd ``nx`` included)."""
    net = _trained_net()
    u = randn_complex(3, 2, 6, 37, seed=5)
    whole = net(u)
    scale = BasisCNN.unit_scale(u)
    for planes in (slice(0, 3), slice(5, 12), slice(17, 18), slice(30, 37)):
        wide = BasisCNN.slab(planes, 37)
        assert wide.start % 2 == 0 and (wide.stop % 2 == 0 or wide.stop == 37)
        crop = slice(planes.start - wide.start, planes.stop - wide.start)
        part = net(u[..., wide], scale)[..., crop]
        torch.testing.assert_close(part, whole[..., planes], rtol=1e-5, atol=1e-5)
