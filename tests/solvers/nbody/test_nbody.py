"""N-body solver: the generator's physics (momentum, energy order, clipping, frames, seeds),
the network's E(3) and permutation equivariance, the baselines and a training step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from sciml.solvers.nbody.data import (
    ChargedSystem,
    coulomb_forces,
    generate,
    initial_conditions,
    potential_energy,
    simulate,
    total_energy,
)
from sciml.solvers.nbody.model import NBodyNetwork, fully_connected_edges
from sciml.solvers.nbody.train import (
    batch_indices,
    constant_velocity_mse,
    evaluate,
    fit_linear_time,
    linear_mse,
    train_epoch,
)


@pytest.fixture(autouse=True)
def float64_single_thread():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


# --- generator ----------------------------------------------------------------------------


def test_initial_conditions_follow_the_egnn_distribution_and_seeds():
    system = ChargedSystem()
    pos, vel, charge = initial_conditions(system, seeds=range(400))
    assert pos.shape == vel.shape == (400, 5, 3) and charge.shape == (400, 5)
    assert set(charge.unique().tolist()) == {-1.0, 1.0}
    assert abs(charge.mean().item()) < 0.1
    torch.testing.assert_close(vel.norm(dim=-1), torch.full((400, 5), 0.5), atol=1e-14, rtol=0)
    assert abs(pos.std().item() - 1.0) < 0.05
    # trajectory i depends on its own seed only
    again = initial_conditions(system, seeds=[7, 3])
    assert torch.equal(again[0][1], pos[3]) and torch.equal(again[2][0], charge[7])


def test_generate_is_independent_of_chunking_and_neighbours():
    system = ChargedSystem()
    a = generate(system, [11, 12, 13], frame_in=2, frame_out=3, sample_every=20, chunk_size=2)
    b = generate(system, [12], frame_in=2, frame_out=3, sample_every=20)
    assert torch.equal(a.target[1], b.target[0]) and torch.equal(a.vel[1], b.vel[0])


def test_generate_integrates_fewer_systems_at_once_where_their_pairwise_arrays_are_large(monkeypatch):
    """A chunk whose (B, N, N, 3) arrays would pass CHUNK_BYTES is cut (1000 particles in chunks of 4096
    asked 98 GB); the data are the same."""
    import sciml.solvers.nbody.data as nbody_data

    system = ChargedSystem(n_particles=6)
    whole = generate(system, [1, 2, 3, 4], frame_in=1, frame_out=2, sample_every=5)
    seen = []
    original = nbody_data.initial_conditions
    monkeypatch.setattr(nbody_data, "initial_conditions", lambda s, seeds, **kw: seen.append(len(seeds)) or
                        original(s, seeds, **kw))
    monkeypatch.setattr(nbody_data, "CHUNK_BYTES", 2 * 3 * 8 * 36)  # two systems' pairwise arrays
    cut = nbody_data.generate(system, [1, 2, 3, 4], frame_in=1, frame_out=2, sample_every=5, chunk_size=4096)
    assert seen == [2, 2] and torch.equal(cut.target, whole.target) and torch.equal(cut.vel, whole.vel)


def test_invalid_sizes_are_named():
    system = ChargedSystem()
    pos, vel, charge = initial_conditions(system, [0])
    for kwargs in ({"n_frames": 0}, {"n_frames": 2, "sample_every": 0}):
        with pytest.raises(ValueError, match="n_frames >= 1 and sample_every >= 1"):
            simulate(system, pos, vel, charge, **kwargs)
    for seeds, chunk in (([], 4), ([0], 0)):
        with pytest.raises(ValueError, match="at least one seed and chunk_size >= 1"):
            generate(system, seeds, frame_in=0, frame_out=1, sample_every=2, chunk_size=chunk)
    for kwargs in ({"lmax": 0}, {"r_max": 0.0}):
        with pytest.raises(ValueError, match="lmax >= 1"):
            NBodyNetwork(channels=4, **kwargs)
    data = generate(system, [0, 1], frame_in=0, frame_out=1, sample_every=2)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        net = NBodyNetwork(channels=4, layers=1)
        train_epoch(net, torch.optim.Adam(net.parameters()), data, 0, torch.Generator().manual_seed(0))
    still = type(data)(data.pos, torch.zeros_like(data.vel), data.charge, data.target, data.horizon,
                       data.clipped_steps)
    assert fit_linear_time(still) == 0.0


def test_frames_are_taken_every_sample_every_steps():
    """Without forces motion is uniform: frame k is x0 + v0 dt sample_every (k+1)."""
    system = ChargedSystem(strength=0.0)
    pos, vel, charge = initial_conditions(system, seeds=range(3))
    xs, vs, clipped = simulate(system, pos, vel, charge, n_frames=4, sample_every=25)
    for k in range(4):
        torch.testing.assert_close(xs[:, k], pos + vel * system.dt * 25 * (k + 1), atol=1e-13, rtol=0)
    assert torch.equal(vs[:, -1], vel) and clipped.sum() == 0
    d = generate(system, range(3), frame_in=1, frame_out=3, sample_every=25)
    assert d.horizon == pytest.approx(2 * 25 * system.dt)
    assert constant_velocity_mse(d) < 1e-28
    assert fit_linear_time(d) == pytest.approx(d.horizon, rel=1e-12)


def test_forces_are_coulomb_and_pairwise():
    x = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    q = torch.tensor([[1.0, -1.0]])
    f, clipped = coulomb_forces(x, q, strength=1.0)
    torch.testing.assert_close(f, torch.tensor([[[0.25, 0, 0], [-0.25, 0, 0]]]), atol=1e-15, rtol=0)
    f, _ = coulomb_forces(x, -q * q)  # like charges repel
    assert f[0, 0, 0] < 0 < f[0, 1, 0]
    # the force is -grad U
    pos, _, charge = initial_conditions(ChargedSystem(), seeds=range(4))
    pos.requires_grad_(True)
    (grad,) = torch.autograd.grad(potential_energy(pos, charge).sum(), pos)
    torch.testing.assert_close(coulomb_forces(pos, charge)[0], -grad, atol=1e-12, rtol=0)


def test_clipping_caps_components_and_breaks_newtons_third_law():
    """Two particles 0.05 apart (|F| = 400) and a third: the clipped forces no longer sum to zero."""
    x = torch.tensor([[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.3, 1.0, 0.0]]])
    q = torch.tensor([[1.0, -1.0, 1.0]])
    free, clipped = coulomb_forces(x, q, max_force=None)
    assert not clipped.any() and free.sum(1).abs().max() < 1e-12
    capped, clipped = coulomb_forces(x, q, max_force=100.0)
    assert clipped.all() and capped.abs().max() == 100.0
    assert capped.sum(1).abs().max() > 1e-2  # the part of F_01 above the cap, no longer cancelled


def test_momentum_is_conserved_exactly_without_clipping():
    system = ChargedSystem()
    pos, vel, charge = initial_conditions(system, seeds=range(48))
    xs, vs, clipped = simulate(system, pos, vel, charge, n_frames=15, sample_every=100)
    p0 = (vel + system.dt * coulomb_forces(pos, charge, max_force=system.max_force)[0]).sum(1)  # after first kick
    drift = (vs.sum(2) - p0[:, None]).abs().amax((1, 2))
    free = clipped == 0
    assert free.sum() >= 10 and (~free).sum() >= 1  # both kinds occur in 1500 steps
    assert drift[free].max() < 1e-12
    assert drift[~free].max() > 1e-6  # clipped steps do change the momentum


def test_energy_error_is_second_order_without_clipping():
    """Leapfrog: max |E_n - E_0| over the run falls like dt^2 (measured slope), no drift."""
    dts = [4e-3, 2e-3, 1e-3]
    base = ChargedSystem(max_force=None)
    pos, vel, charge = initial_conditions(base, seeds=range(100, 124))
    errors = []
    for dt in dts:
        system = ChargedSystem(max_force=None, dt=dt)
        every = round(0.1 / dt)
        xs, vs, _ = simulate(system, pos, vel, charge, n_frames=20, sample_every=every)
        energy = torch.stack([total_energy(xs[:, k], vs[:, k], charge, system) for k in range(20)], 1)
        errors.append((energy - energy[:, :1]).abs().amax(1))
        # a close encounter needs a finer step than these: keep the systems that never come near
        min_dist = torch.cdist(xs.flatten(0, 1), xs.flatten(0, 1))
        min_dist = min_dist + 1e9 * torch.eye(5)
        near = min_dist.amin((1, 2)).view(len(charge), -1).amin(1) < 0.3
        errors[-1][near] = float("nan")
    err = torch.stack(errors, 1)  # (systems, dts)
    keep = ~err.isnan().any(1)
    assert keep.sum() >= 8
    slopes = np.polyfit(np.log(dts), np.log(err[keep].T.numpy()), 1)[0]
    assert 1.8 < float(np.median(slopes)) < 2.2
    assert err[keep, -1].max() < 1e-3


def test_baselines():
    g = torch.Generator().manual_seed(0)
    pos, vel, tgt = (torch.randn(6, 5, 3, generator=g) for _ in range(3))
    from sciml.solvers.nbody.data import NBodyData

    d = NBodyData(pos, vel, torch.ones(6, 5), tgt, horizon=0.5, clipped_steps=torch.zeros(6, dtype=torch.long))
    assert constant_velocity_mse(d) == pytest.approx(float(((pos + 0.5 * vel - tgt) ** 2).mean()), rel=1e-14)
    t = fit_linear_time(d)
    ts = torch.linspace(t - 0.1, t + 0.1, 21)
    assert min(linear_mse(d, float(s)) for s in ts) == pytest.approx(linear_mse(d, t), rel=1e-12)


# --- network ------------------------------------------------------------------------------


def test_fully_connected_edges():
    e = fully_connected_edges(2, 4)
    assert e.shape == (2, 2 * 12)
    pairs = set(map(tuple, e.T.tolist()))
    assert len(pairs) == 24 and all(a != b and a // 4 == b // 4 for a, b in pairs)


@pytest.fixture(scope="module")
def systems():
    g = torch.Generator().manual_seed(3)
    pos = 2.0 * torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    vel = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    charge = torch.randint(0, 2, (3, 5), generator=g).to(torch.float64) * 2 - 1
    return pos, vel, charge


def network(product: str) -> NBodyNetwork:
    net = NBodyNetwork(channels=4, lmax=2, lmax_edge=2, layers=2, correlation=3, n_radial=6, radial_hidden=8,
                       message_layers=2, product=product)
    with torch.no_grad():  # non-trivial gate biases and product weights
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("product", ["gaunt", "cg"])
@pytest.mark.parametrize("improper", [False, True])
def test_network_is_e3_equivariant(systems, product, improper):
    pos, vel, charge = systems
    net = network(product)
    R = o3.rand_matrix()
    if improper:
        R = -R
    shift = torch.tensor([0.3, -1.2, 2.0])
    out = net(pos @ R.T + shift, vel @ R.T, charge)
    ref = net(pos, vel, charge)
    assert (ref - pos).abs().max() > 1e-3
    torch.testing.assert_close(out, ref @ R.T + shift, atol=1e-10, rtol=0)


@pytest.mark.parametrize("product", ["gaunt", "cg"])
def test_network_is_permutation_equivariant(systems, product):
    pos, vel, charge = systems
    net = network(product)
    perm, order = torch.randperm(5), torch.tensor([2, 0, 1])
    out = net(pos[order][:, perm], vel[order][:, perm], charge[order][:, perm])
    torch.testing.assert_close(out, net(pos, vel, charge)[order][:, perm], atol=1e-10, rtol=0)


@pytest.mark.parametrize("product", ["gaunt", "cg"])
def test_network_sees_charges_only_through_their_products(systems, product):
    """Coulomb dynamics depend on q_i q_j only: flipping every charge changes nothing, flipping one
    changes the prediction."""
    pos, vel, charge = systems
    net = network(product)
    ref = net(pos, vel, charge)
    torch.testing.assert_close(net(pos, vel, -charge), ref, atol=1e-10, rtol=0)
    one = charge.clone()
    one[:, 0] *= -1
    assert (net(pos, vel, one) - ref).abs().max() > 1e-4


def test_network_rejects_bad_shapes(systems):
    pos, vel, charge = systems
    with pytest.raises(ValueError, match=r"expected pos, vel of shape \(B, N, 3\)"):
        network("gaunt")(pos, vel, charge[:, :4])
    with pytest.raises(ValueError, match="expected product"):
        NBodyNetwork(product="clebsch")


def test_training_reduces_the_loss():
    system = ChargedSystem()
    d = generate(system, range(16), frame_in=3, frame_out=5, sample_every=100)
    torch.manual_seed(0)
    net = NBodyNetwork(channels=8, lmax=1, layers=1, n_radial=8, radial_hidden=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    before = evaluate(net, d)
    for _ in range(15):
        train_epoch(net, opt, d, batch_size=8, generator=g)
    assert evaluate(net, d) < 0.5 * before
    parts = batch_indices(10, 4, g)
    assert [len(p) for p in parts] == [4, 4, 2] and sorted(torch.cat(parts).tolist()) == list(range(10))


@pytest.mark.parametrize("n", [5, 40])
def test_initial_positions_spread_as_egnn_for_any_particle_count(n):
    """sigma = loc_std (n/5)^(1/3): the same number density of particles whatever their count."""
    pos, _, _ = initial_conditions(ChargedSystem(n_particles=n, loc_std=0.7), range(400))
    expected = 0.7 * (n / 5) ** (1 / 3)
    assert float(pos.std()) == pytest.approx(expected, rel=0.05)
