"""Joint-MAPLE: the hybrid-space encoding, the joint map refinement, resuming the training, and a
tiny end-to-end run against zero-filled fitting (the ZS-SSL line split: ``test_zero_shot.py``)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lorein.eval.metrics import map_error
from lorein.methods.baselines.joint_maple import (
    JointMapleConfig,
    PlaneEncoding,
    SampledDataTerm,
    SampledLocations,
    UnrolledNetwork,
    heldout_loss,
    kspace_data_term,
    plane_images,
    refine_maps,
    train_network,
    volume_images,
)
from lorein.methods.baselines.zero_shot import split_lines
from lorein.methods.calibration import espirit_coils, estimate_from_calibration
from lorein.methods.registry import reconstruct
from lorein.numerics.sense import zero_filled_images
from lorein.numerics.voxel_fit import fit_maps
from lorein.physics.coils import rss_normalise, simulate_coils
from lorein.physics.models.registry import signal_model
from lorein.physics.operators import ContrastDataTerm, EncodingOperator
from lorein.sim.presets import vfa_megre_table
from lorein.sim.simulate import Simulation, simulate
from tests.helpers import TINY, randn_complex, rng
from tests.numerics.test_voxel_fit import small_t2ir_table

GRID = (2, 8, 6)  # nz, ny, nx


@pytest.fixture(scope="module")
def tiny() -> Simulation:
    return simulate(TINY, 8, seed=3, snr=30.0, progress=False)


def _lines(n_contrasts: int, per_contrast: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random distinct (ky, kz) locations for every contrast: ``ky, kz, contrast``."""
    nz, ny, _ = GRID
    g = rng(seed)
    flat = torch.cat(
        [torch.randperm(nz * ny, generator=g)[:per_contrast] for _ in range(n_contrasts)]
    )
    contrast = torch.arange(n_contrasts).repeat_interleave(per_contrast)
    return flat % ny, flat // ny, contrast


def _coils(n_coils: int) -> torch.Tensor:
    nz, ny, nx = GRID
    return rss_normalise(simulate_coils(n_coils, (nx, ny, nz), (20.0, 20.0, 40.0)))


def test_plane_encoding_equals_the_encoding_operator() -> None:
    nz, ny, nx = GRID
    ky, kz, contrast = (torch.cat([v, v[:3]]) for v in _lines(5, 10, seed=2))  # 3 repeats
    coils = randn_complex(3, nz, ny, nx, seed=3)
    op = EncodingOperator(coils, ky, kz, contrast, n_contrasts=5)
    y = randn_complex(contrast.numel(), 3, nx, seed=4)
    enc = PlaneEncoding(y, ky, kz, contrast, coils, 5)
    x = randn_complex(5, nz, ny, nx, seed=5)
    rows, xs = torch.arange(contrast.numel()), torch.arange(nx)
    torch.testing.assert_close(volume_images(enc.adjoint(rows, xs)), op.adjoint(y))
    normal = enc.normal(plane_images(x), enc.weights(rows), xs)
    torch.testing.assert_close(volume_images(normal), op.adjoint(op(x)))
    # predicted lines of x fit the data y exactly where y = E x
    enc_x = PlaneEncoding(op(x), ky, kz, contrast, coils, 5)
    torch.testing.assert_close(
        enc_x.predict(plane_images(x), rows, xs), enc_x.measured(rows, xs), rtol=1e-4, atol=1e-5
    )


def _sparse_encoding() -> tuple[PlaneEncoding, torch.Tensor, torch.Tensor]:
    """Few lines per contrast (one contrast without any, one location sampled twice)."""
    nz, ny, nx = GRID
    ky, kz, contrast = _lines(5, 3, seed=6)
    keep = contrast != 4
    ky, kz, contrast = (torch.cat([v[keep], v[:1]]) for v in (ky, kz, contrast))
    y = randn_complex(contrast.numel(), 3, nx, seed=7)
    enc = PlaneEncoding(y, ky, kz, contrast, _coils(3), 5)
    return enc, torch.arange(contrast.numel()), torch.tensor([1, 4])


def test_sampled_rows_factor_the_normal_operator() -> None:
    enc, rows, xs = _sparse_encoding()
    weights = enc.weights(rows)
    locations = SampledLocations.of(weights)
    assert locations.index.shape == (5, 3) and locations.root_weight[4].eq(0).all()
    assert locations.root_weight[0].square().sum() == 4  # the repeated location counts twice
    u = randn_complex(2, 5, *GRID[:2], seed=8)
    v = randn_complex(2, 5, 3, 3, seed=9)
    bu = enc.sample(u, locations, xs)
    # dot-product test of sample / spread, and B^H B = E^H M E
    lhs, rhs = (
        torch.vdot(bu.flatten(), v.flatten()),
        torch.vdot(u.flatten(), enc.spread(v, locations, xs).flatten()),
    )
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        enc.spread(bu, locations, xs), enc.normal(u, weights, xs), rtol=1e-5, atol=1e-5
    )
    # B B^H from the coil products equals B applied to B^H of every unit vector
    gram = enc.sampled_gram(locations, xs)
    n = gram.shape[-1]
    units = torch.eye(n, dtype=torch.complex64).reshape(n, 1, 1, 3, 3).expand(n, 2, 5, 3, 3)
    columns = torch.stack(
        [enc.sample(enc.spread(e, locations, xs), locations, xs) for e in units], dim=-1
    )
    torch.testing.assert_close(gram, columns.flatten(2, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_contrast", [2, 5])
def test_sampled_data_term_equals_the_per_contrast_fft_term(per_contrast: int) -> None:
    nz, ny, nx = GRID
    ky, kz, contrast = (torch.cat([v, v[:3]]) for v in _lines(5, per_contrast, seed=11))
    coils = _coils(3)
    y = randn_complex(contrast.numel(), 3, nx, seed=12)
    encoding = PlaneEncoding(y, ky, kz, contrast, coils, 5)
    naive = ContrastDataTerm(y, ky, kz, contrast, GRID, chunk=2)
    x = randn_complex(5, nz, ny, nx, seed=13).requires_grad_()
    expected = naive(x, coils)
    expected_grad = torch.autograd.grad(expected, x)[0]
    chosen = kspace_data_term(encoding, y, coils)  # the sampled form for m <= 3 coils
    assert isinstance(chosen, SampledDataTerm) == (per_contrast <= 3)
    for term in (SampledDataTerm(encoding), chosen):
        value = term(x)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=0.0)
        grad = torch.autograd.grad(value, x)[0]
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_exact_data_consistency_is_the_converged_cg_solution() -> None:
    enc, rows, xs = _sparse_encoding()
    # rank(B^H B) <= 9: CG converges within 10 steps (more give 0 / 0 in its backward pass)
    sizes = {"unrolls": 2, "channels": 4, "blocks": 1, "cg_iterations": 12}
    torch.manual_seed(0)
    cg = UnrolledNetwork(5, sizes, mu=0.05)
    exact = UnrolledNetwork(5, sizes, mu=0.05, dc_solver="exact")
    exact.load_state_dict(cg.state_dict())
    for net in (cg, exact):  # a denoiser that is not the identity
        torch.nn.init.normal_(net.denoiser.expand.weight, std=0.1, generator=rng(10))
    x_cg, x_exact = cg(enc, rows, xs), exact(enc, rows, xs)
    torch.testing.assert_close(x_exact, x_cg, rtol=1e-4, atol=1e-4 * x_cg.abs().max().item())
    # the exact step solves its system: DC(0) = (E^H M E + mu I)^-1 E^H M y
    x0 = UnrolledNetwork(5, {**sizes, "unrolls": 0}, mu=0.05, dc_solver="exact")(enc, rows, xs)
    residual = enc.normal(x0, enc.weights(rows), xs) + 0.05 * x0 - enc.adjoint(rows, xs)
    assert residual.abs().max() < 1e-4 * enc.adjoint(rows, xs).abs().max()
    # and the learned mu gets the same gradient
    for x in (x_cg, x_exact):
        x.abs().square().sum().backward()
    torch.testing.assert_close(exact.log_mu.grad, cg.log_mu.grad, rtol=1e-3, atol=1e-5)


def test_config_rejects_an_unknown_dc_solver() -> None:
    with pytest.raises(ValueError, match="dc_solver = 'lu': expected one of cg, exact"):
        JointMapleConfig(dc_solver="lu")  # type: ignore[arg-type]


def _truth(seed: int) -> dict[str, torch.Tensor]:
    g = rng(seed)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(GRID, generator=g)

    return {
        "M0": uniform(0.5, 1.5),
        "T1": uniform(0.6, 2.0),
        "T2star": uniform(0.02, 0.08),
        "B0": uniform(-20.0, 20.0),
        "phase0": uniform(-2.0, 2.0),
    }


def test_refinement_stays_at_the_truth_and_lowers_its_objective() -> None:
    model = signal_model("vfa_megre", vfa_megre_table())
    truth = _truth(0)
    support = torch.ones(GRID, dtype=torch.bool)
    support[0, 0] = False  # voxels outside the support stay zero
    images = model(truth) * support
    coils = _coils(4)
    ky, kz, contrast = _lines(60, 4, seed=1)
    kspace = EncodingOperator(coils, ky, kz, contrast, n_contrasts=60)(images)
    data = ContrastDataTerm(kspace, ky, kz, contrast, GRID)

    def kspace_term(x: torch.Tensor) -> torch.Tensor:
        return data(x, coils) / kspace.numel()

    # Adam's first steps move every parameter by about the learning rate, even at a stationary
    # point; it must come back (measured: objective 1.2e-7, relative errors <= 1.3e-3, B0 5e-3 Hz)
    stay, history = refine_maps(images, support, model, truth, kspace_term, 100.0, 40, 1e-2)
    assert history[-1]["total"] < 1e-6
    for name in ("M0", "T1", "T2star"):
        torch.testing.assert_close(stay[name][support], truth[name][support], rtol=5e-3, atol=0)
    torch.testing.assert_close(stay["B0"][support], truth["B0"][support], rtol=0, atol=0.05)
    assert bool((stay["T1"][~support] == 0).all())

    g = rng(7)
    start = {k: v * (1 + 0.1 * torch.randn(GRID, generator=g)) for k, v in truth.items()}
    refined, history = refine_maps(images, support, model, start, kspace_term, 100.0, 150, 1e-2)
    assert history[-1]["total"] < 0.05 * history[0]["total"]  # measured: 0.013
    for name in ("M0", "T1", "T2star", "B0", "phase0"):
        before = (start[name] - truth[name])[support].norm()
        after = (refined[name] - truth[name])[support].norm()
        assert after < 0.7 * before  # measured: 0.26 (M0) to 0.53 (T1)


def test_refinement_stays_at_the_truth_of_the_t2ir_model() -> None:
    # the sim 2 model (T2 as well, 80 contrasts), 4 locations per contrast (the sampled k-space
    # term, m <= 4 coils): noiseless data of the truth are a stationary point (measured: relative
    # errors <= 1.8e-3)
    model = signal_model("t2ir_gre", small_t2ir_table())
    truth = {**_truth(0), "T2": 0.04 + 0.08 * torch.rand(GRID, generator=rng(3))}
    images = model(truth)
    coils = _coils(4)
    ky, kz, contrast = _lines(80, 4, seed=1)
    kspace = EncodingOperator(coils, ky, kz, contrast, n_contrasts=80)(images)
    encoding = PlaneEncoding(kspace, ky, kz, contrast, coils, 80)
    term = kspace_data_term(encoding, kspace, coils)
    support = torch.ones(GRID, dtype=torch.bool)
    stay, history = refine_maps(
        images, support, model, truth, lambda x: term(x) / kspace.numel(), 100.0, 40, 1e-2
    )
    assert history[-1]["total"] < 1e-6
    for name in ("M0", "T1", "T2", "T2star"):
        torch.testing.assert_close(stay[name], truth[name], rtol=5e-3, atol=0)
    torch.testing.assert_close(stay["B0"], truth["B0"], rtol=0, atol=0.05)


def test_training_resumes_to_the_same_network(tiny: Simulation, tmp_path: Path) -> None:
    problem = tiny.problem
    coils = espirit_coils(problem)
    encoding = PlaneEncoding(
        problem.kspace, problem.ky, problem.kz, problem.contrast, coils, problem.n_contrasts
    )
    split = split_lines(problem.contrast, 0.2, 0.4, n_masks=4, seed=0, stochastic_rounding=True)
    config = JointMapleConfig(unrolls=1, channels=8, blocks=1, cg_iterations=2, validate_every=5)

    def train(iterations: int, checkpoint: Path | None = None, resume: bool = False) -> tuple:
        torch.manual_seed(0)
        net = UnrolledNetwork(problem.n_contrasts, config.network_sizes(), config.mu)
        cfg = replace(config, iterations=iterations)
        history, stopping = train_network(net, encoding, split, cfg, 0, checkpoint, resume, False)
        return net, history, stopping

    straight, history, stopping = train(20)
    train(10, tmp_path / "net.pt")
    resumed, resumed_history, _ = train(20, tmp_path / "net.pt", resume=True)
    assert len(history) == 20 and sum("heldout" in h for h in history) == 4
    for again, first in zip(resumed_history, history, strict=True):
        assert again == pytest.approx(first)
    assert resumed.state_dict().keys() == straight.state_dict().keys()
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value)
    # the best weights are the ones kept: their held-out loss is the recorded best
    assert history[stopping.best_iteration]["heldout"] == stopping.best_loss
    assert heldout_loss(straight, encoding, split) == pytest.approx(stopping.best_loss)


@pytest.mark.parametrize("dc_solver", ["cg", "exact"])
def test_beats_zero_filled_fitting(tiny: Simulation, dc_solver: str) -> None:
    problem, truth = tiny.problem, tiny.truth
    model = signal_model(problem.signal_model, problem.contrasts)
    support = estimate_from_calibration(problem, problem.kspace).support
    zero_filled = fit_maps(zero_filled_images(problem, espirit_coils(problem)), model, mask=support)
    config = JointMapleConfig(
        unrolls=2,
        channels=16,
        blocks=1,
        cg_iterations=3,
        dc_solver=dc_solver,  # type: ignore[arg-type]
        iterations=60,
        lr=2e-3,
        map_iterations=40,
    )
    maps = reconstruct("joint-maple", problem, config, progress=False)

    assert set(maps.values) == set(model.parameters)
    for v in maps.values.values():
        assert v.dtype == torch.float32 and v.shape == (4, 24, 24) and torch.isfinite(v).all()
    assert maps.images is not None and maps.images.shape == (60, 4, 24, 24)
    assert maps.images.dtype == torch.complex64
    assert maps.mask is not None and torch.equal(maps.mask, support.to(torch.uint8))
    history = maps.extras["history"]
    assert len(history) == maps.extras["network_steps"] + 40
    assert any("heldout" in h for h in history) and maps.extras["seconds"] > 0

    errors = {
        name: [
            map_error(name, result[name], getattr(truth, name), truth.mask)
            for result in (maps.values, zero_filled)
        ]
        for name in ("T1", "T2star")
    }
    # measured: T1 0.450 (exact DC: 0.452) vs 0.663, T2* 0.385 (0.373) vs 0.448 (fully sampled
    # data fit: 0.42, 0.35)
    assert errors["T1"][0] < errors["T1"][1] - 0.1
    assert errors["T2star"][0] < errors["T2star"][1] - 0.03
