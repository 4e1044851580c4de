"""scOT data pipeline and trainer: all2all pairs, velocity channels, the relative-L1 loss, resume, the study's fits."""

from __future__ import annotations

import math

import pytest
import torch

from sciml.cases.scot import fit_power_law, gains_at, lead_time_pairs, measured_efficiency_gain
from sciml.solvers.scot import ScOT, ScOTConfig
from sciml.solvers.scot.baseline import TimeFNO
from sciml.solvers.scot.data import ChannelScaler, PairData, all2all_pairs, relative_l1, velocity_channels
from sciml.solvers.scot.training import Trainer, cosine_schedule

F64 = torch.float64


@pytest.mark.parametrize("n, stride", [(21, 2), (15, 2), (5, 1), (11, 3), (1, 1)])
def test_all2all_yields_every_ordered_pair_of_the_strided_snapshots(n, stride):
    pairs = all2all_pairs(n, stride)
    k = (n - 1) // stride
    assert len(pairs) == (k + 1) * (k + 2) // 2
    assert bool((pairs[:, 0] <= pairs[:, 1]).all())
    assert bool((pairs % stride == 0).all()) and int(pairs.max()) <= n - 1
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)  # no duplicates
    assert all((i, i) in {tuple(p) for p in pairs.tolist()} for i in range(0, n, stride))  # identity included


def test_all2all_k7_gives_36_pairs_and_rejects_bad_arguments():
    assert len(all2all_pairs(15, 2)) == 36
    with pytest.raises(ValueError, match="stride"):
        all2all_pairs(10, 0)
    with pytest.raises(ValueError, match="max_index"):
        all2all_pairs(10, 2, max_index=10)


@pytest.mark.parametrize("length", [1.0, 2 * math.pi])
def test_velocity_channels_of_a_shear_and_a_cellular_flow(length):
    """psi = sin(a x) cos(b y)/(a^2+b^2) has omega = sin(a x) cos(b y), u = psi_y, v = -psi_x."""
    n = 32
    x = torch.arange(n, dtype=F64) * length / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    a, b = 2 * math.pi * 2 / length, 2 * math.pi * 3 / length
    omega = torch.sin(a * X) * torch.cos(b * Y)
    uv = velocity_channels(omega[None], length)
    k2 = a * a + b * b
    u = -b * torch.sin(a * X) * torch.sin(b * Y) / k2
    v = -a * torch.cos(a * X) * torch.cos(b * Y) / k2
    assert uv.shape == (1, 2, n, n)
    assert torch.allclose(uv[0, 0], u, atol=1e-12) and torch.allclose(uv[0, 1], v, atol=1e-12)
    four = velocity_channels(omega[None], length, four_channels=True)
    assert torch.equal(four[:, 1:3], uv) and bool((four[:, 0] == 1).all()) and bool((four[:, 3] == 0).all())


def test_relative_l1_per_sample_and_per_channel_group():
    y = torch.ones(2, 4, 3, 3, dtype=F64)
    pred = y.clone()
    pred[0, 0] += 0.5  # channel 0 of sample 0 off by 50 %
    assert torch.allclose(relative_l1(pred, y), torch.tensor([0.5 / 4, 0.0], dtype=F64))
    groups = [[0], [1, 2], [3]]
    assert torch.allclose(relative_l1(pred, y, groups), torch.tensor([0.5 / 3, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="equal shapes"):
        relative_l1(pred, y[:, :2])


def test_channel_scaler_round_trip_and_constant_channels():
    f = torch.randn(3, 4, 4, 8, 8, dtype=F64) * torch.tensor([1.0, 5.0, 0.0, 2.0], dtype=F64).view(1, 1, 4, 1, 1)
    f[:, :, 2] = 1.0  # constant (rho = 1)
    s = ChannelScaler.fit(f)
    z = s.encode(f)
    assert torch.allclose(s.decode(z), f, atol=1e-12)
    flat = z.transpose(0, 2).reshape(4, -1)
    assert torch.allclose(flat[[0, 1, 3]].mean(1), torch.zeros(3, dtype=F64), atol=1e-12)
    assert torch.allclose(flat[[0, 1, 3]].std(1), torch.ones(3, dtype=F64), atol=1e-12)
    assert bool((z[:, :, 2] == 0).all())


def test_channel_scaler_keeps_the_scale_of_a_small_channel_beside_large_ones():
    """Only a channel constant to round-off of its own magnitude gets std 1: one a thousandth of another's
    scale is normalised like the rest (dimensional data, e.g. a density beside a pressure in Pa)."""
    f = torch.randn(20, 3, 8, 8, dtype=F64) * torch.tensor([1e3, 1.0, 1e-4], dtype=F64).view(1, 3, 1, 1)
    z = ChannelScaler.fit(f).encode(f)
    torch.testing.assert_close(z.transpose(0, 1).reshape(3, -1).std(1), torch.ones(3, dtype=F64), rtol=1e-10,
                               atol=0)
    nearly = 1.0 + 1e-16 * torch.randn(20, 1, 8, 8, dtype=F64)
    assert float(ChannelScaler.fit(torch.cat([f, nearly], 1)).std[3]) == 1.0
    with pytest.raises(ValueError, match=r"expected fields of shape \(\.\.\., C, H, W\)"):
        ChannelScaler.fit(torch.randn(4, 4))


def test_pair_data_refuses_indices_outside_the_set_and_a_bad_time_scale():
    fields = torch.zeros(2, 5, 1, 4, 4, dtype=F64)
    data = PairData(fields, all2all_pairs(5, 2), t_norm=4.0)
    for bad in ([-1], [12]):
        with pytest.raises(IndexError, match=r"sample indices must lie in \[0, 12\)"):
            data.batch(torch.tensor(bad))
    for t_norm in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValueError, match="positive, finite t_norm"):
            PairData(fields, all2all_pairs(5, 2), t_norm=t_norm)


def test_pair_data_draws_the_right_snapshots_and_lead_times():
    fields = torch.arange(2 * 5, dtype=F64).view(2, 5, 1, 1, 1).expand(2, 5, 1, 4, 4).contiguous()
    pairs = all2all_pairs(5, 2)  # (0,0) (0,2) (0,4) (2,2) (2,4) (4,4)
    data = PairData(fields, pairs, t_norm=4.0)
    assert len(data) == 12
    x, t, y = data.batch(torch.tensor([1, 6 + 4]))  # traj 0 pair (0,2); traj 1 pair (2,4)
    assert x[:, 0, 0, 0].tolist() == [0.0, 7.0] and y[:, 0, 0, 0].tolist() == [2.0, 9.0]
    assert t.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="pair indices"):
        PairData(fields, torch.tensor([[0, 5]]), 4.0)


def test_cosine_schedule_warms_up_and_decays_to_zero():
    f = [cosine_schedule(s, 100, 10) for s in range(101)]
    assert f[0] < f[5] < f[9] <= 1.0 and abs(f[10] - 1.0) < 1e-12
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == pytest.approx(0.0, abs=1e-12)


def _tiny():
    cfg = ScOTConfig(image_size=16, patch_size=2, in_channels=2, out_channels=2, embed_dim=8, depths=(1, 1),
                     num_heads=(2, 2), window_size=4)
    torch.manual_seed(0)
    model = ScOT(cfg)
    fields = torch.randn(3, 5, 2, 16, 16)
    return model, PairData(fields, all2all_pairs(5, 2), 4.0)


def test_trainer_resumed_from_its_state_continues_bit_for_bit():
    model, data = _tiny()
    kw = dict(steps=6, batch_size=4, lr=1e-3, lr_groups={"io": 2e-3, "time": 5e-4}, warmup=2, seed=3)
    ref = Trainer(model, data, **kw)
    ref.run()
    model2, _ = _tiny()
    first = Trainer(model2, data, **kw)
    first.run(3)
    state = first.state_dict()
    model3, _ = _tiny()
    second = Trainer(model3, data, **kw)
    second.load_state_dict(state)
    second.run()
    assert second.step == 6
    for (k, a), b in zip(ref.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [g["lr"] for g in ref.optimizer.param_groups] == [g["lr"] for g in second.optimizer.param_groups]


def test_trainer_uses_separate_learning_rates_and_lowers_the_loss():
    model, data = _tiny()
    trainer = Trainer(model, data, steps=30, batch_size=6, lr=1e-3, lr_groups={"io": 3e-3, "time": 1e-4}, seed=0)
    assert {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups} == {"io": 3e-3, "time": 1e-4,
                                                                                     "rest": 1e-3}
    with pytest.raises(ValueError, match="lr_groups: no parameter group 'IO'"):
        Trainer(model, data, steps=1, batch_size=6, lr=1e-3, lr_groups={"IO": 3e-3}, seed=0)
    # one fixed batch, evaluated before and after: fitting noise pairs the loss must still go down
    x, t, y = data.batch(torch.arange(6))
    with torch.no_grad():
        before = relative_l1(model(x, t), y).mean()
    trainer.run()
    with torch.no_grad():
        after = relative_l1(model(x, t), y).mean()
    assert after < before


def test_time_fno_takes_the_lead_time_as_a_channel():
    torch.manual_seed(0)
    net = TimeFNO(2, modes=4, width=8, n_layers=2)
    x = torch.randn(3, 2, 16, 16)
    a, b = net(x, torch.zeros(3)), net(x, torch.ones(3))
    assert a.shape == x.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="lead times"):
        net(x, torch.zeros(2))


def test_power_law_fit_and_gains_on_exact_curves():
    m = [2, 4, 8, 16, 32]
    c, a = fit_power_law(m, [10.0 * x**-0.5 for x in m])
    assert c == pytest.approx(10.0) and a == pytest.approx(0.5)
    # scOT E = 2 M^-0.5, FNO E = 8 M^-0.5: at M* = 16 AG = 4 and FNO needs 16 * 16 samples
    g = gains_at((2.0, 0.5), (8.0, 0.5), 16, [2, 512])
    assert g["accuracy_gain"] == pytest.approx(4.0) and g["efficiency_gain"] == pytest.approx(16.0)
    assert g["efficiency_gain_extrapolated"] is False
    assert g["efficiency_gain_unbounded"] is False
    flat = gains_at((2.0, 0.5), (8.0, 0.0), 16, [2, 512])
    assert flat["efficiency_gain"] == math.inf and flat["efficiency_gain_unbounded"] is True
    # an FNO fit that decreases, but so slowly that the size it needs is past any float: unbounded, no error
    slow = gains_at((0.5, 0.0), (1.0, 1e-4), 2, [2, 4])
    assert slow["efficiency_gain"] == math.inf and slow["efficiency_gain_unbounded"] is True


def test_metrics_json_is_strict_json_with_nonfinite_numbers_as_null(tmp_path):
    """metrics.json must load in any JSON parser: no Infinity / NaN literals."""
    import json

    from sciml.runs import Run

    Run(tmp_path).write_metrics({"efficiency_gain": math.inf, "x": [1.0, -math.inf, float("nan")], "y": 2.5})
    text = (tmp_path / "metrics.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == {
        "efficiency_gain": None, "x": [1.0, None, None], "y": 2.5}


def test_measured_efficiency_gain_reads_the_baseline_points_without_a_fit():
    fno = {2: 8.0, 8: 4.0, 32: 2.0}  # E = 8 (M/2)^-1/2 at the measured sizes
    # 4.0 is measured at M = 8: M_FNO / M* = 8 / 4
    assert measured_efficiency_gain(4.0, fno, 4) == (pytest.approx(2.0), False)
    # 2.828 lies halfway (log-log) between M = 8 and M = 32: M_FNO = 16
    eg, bound = measured_efficiency_gain(8.0 / 8**0.5, fno, 4)
    assert eg == pytest.approx(4.0) and bound is False
    assert measured_efficiency_gain(9.0, fno, 4) == (0.5, False)  # the smallest size already reaches it
    assert measured_efficiency_gain(1.0, fno, 4) == (8.0, True)  # never reached: only EG > 32 / 4


def test_symmetries_turn_the_velocity_as_the_vorticity_they_come_from():
    """A grid symmetry applied to the velocity channels (a vector) equals the velocity of the moved vorticity
    (a pseudo-scalar), for every element of the square's point group and random shifts; with the solver's
    commutation with the same group (test_navier_stokes), moved velocity pairs are again solution pairs."""
    from sciml.solvers.navier_stokes import GridSymmetries
    from sciml.operators.spectral import FourierGrid2D
    from sciml.solvers.navier_stokes import gaussian_random_field

    n, length = 16, 2.0
    group = GridSymmetries.of(n)
    omega = gaussian_random_field(FourierGrid2D(n, length), [0, 1])  # (2, n, n), float64
    uv = velocity_channels(omega, length)
    gen = torch.Generator().manual_seed(0)
    for op in range(8):
        element = int(torch.nonzero(group.ops == op)[torch.randint(n * n, (1,), generator=gen)])
        expected = velocity_channels(group.apply(omega, element), length)
        assert torch.allclose(group.apply_vector(uv, element), expected, atol=1e-12), op
    # four channels (rho, u, v, p): the scalars move, the velocity turns
    rho_p = torch.randn(2, 2, n, n, dtype=F64)
    four = torch.stack([rho_p[:, 0], uv[:, 0], uv[:, 1], rho_p[:, 1]], dim=1)
    element = int(torch.nonzero(group.ops == 7)[5])
    moved = group.apply_vector(four, element, (1, 2))
    assert torch.allclose(moved[:, 1:3], group.apply_vector(uv, element), atol=1e-12)
    assert torch.allclose(moved[:, [0, 3]], -group.apply(rho_p, element))  # apply's pseudo-scalar sign (op 7: -1)


def test_normalised_symmetries_act_on_the_physical_fields():
    from sciml.solvers.navier_stokes import GridSymmetries
    from sciml.solvers.scot.data import VelocitySymmetries

    n = 8
    group = GridSymmetries.of(n)
    fields = torch.randn(4, 2, 2, n, n, dtype=F64) * torch.tensor([3.0, 0.5], dtype=F64)[:, None, None] + 1.0
    scaler = ChannelScaler.fit(fields)  # unequal means and scales: a plain swap or sign flip would be wrong
    sym = VelocitySymmetries(group, (0, 1), scaler)
    elements = [int(torch.nonzero(group.ops == op)[3]) for op in (4, 1, 6, 0)]
    moved = sym.apply(scaler.encode(fields), elements)
    for b, e in enumerate(elements):
        assert torch.allclose(scaler.decode(moved[b]), group.apply_vector(fields[b], e), atol=1e-12)


def test_trainer_moves_inputs_and_targets_by_one_symmetry_the_same_on_resume():
    from sciml.solvers.navier_stokes import GridSymmetries
    from sciml.solvers.scot.data import VelocitySymmetries

    model, data = _tiny()
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t):
            seen.append(x.detach().clone())
            return self.inner(x, t)

    sym = VelocitySymmetries(GridSymmetries.of(16), (0, 1))
    kw = dict(steps=4, batch_size=4, lr=1e-3, seed=3)
    trainer = Trainer(Spy(model), data, augment=sym, **kw)
    trainer.run()
    plain = [data.batch(trainer.global_batch(step))[0] for step in range(4)]
    for x, x0 in zip(seen, plain):
        # every sample is its own one moved by some symmetry: the same values, rearranged and signed
        assert torch.equal(x.abs().flatten(1).sort(dim=1).values, x0.abs().flatten(1).sort(dim=1).values)
    assert any(not torch.equal(x, x0) for x, x0 in zip(seen, plain))
    # resumed from the state after two steps: the same draws, the same weights as in one go
    ref_model, _ = _tiny()
    Trainer(ref_model, data, augment=sym, **kw).run()
    model2, _ = _tiny()
    first = Trainer(model2, data, augment=sym, **kw)
    first.run(2)
    model3, _ = _tiny()
    second = Trainer(model3, data, augment=sym, **kw)
    second.load_state_dict(first.state_dict())
    second.run()
    for (k, a), b in zip(ref_model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("n,stride", [(21, 2), (9, 2), (10, 3), (5, 1)])
def test_unseen_lead_times_are_exactly_those_no_training_pair_has(n, stride):
    from sciml.solvers.scot.data import all2all_pairs

    trained = {int(j - i) for i, j in all2all_pairs(n, stride).tolist()}
    seen, unseen = lead_time_pairs(n, stride)
    assert {j for _, j in seen} == trained - {0}
    assert not {j for _, j in unseen} & trained
    assert sorted(j for _, j in seen + unseen) == list(range(1, n)) and all(i == 0 for i, _ in seen + unseen)


def test_the_largest_seed_a_case_allows_trains():
    """Seed 2**63 - 1 (the schemas' bound): the epoch orders and the symmetry draws derive their generator
    seeds from it without overflowing torch's 64-bit seed."""
    from sciml.solvers.navier_stokes import GridSymmetries
    from sciml.solvers.scot.data import VelocitySymmetries

    model, data = _tiny()
    trainer = Trainer(model, data, steps=2, batch_size=4, lr=1e-3, seed=2**63 - 1,
                      augment=VelocitySymmetries(GridSymmetries.of(16), (0, 1)))
    trainer.run()
    assert trainer.step == 2
