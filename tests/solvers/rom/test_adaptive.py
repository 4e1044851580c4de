"""The partitioned HF model, the reduced model, and the adaptive loop on a small plate.

Independent references: the serial :class:`HFModel` and the assembled mass matrix for
the partitioned pieces; the HF trajectory for the reduced model with every point and
every mode; the HF run of the new loading for the adaptive ROM."""

from __future__ import annotations

import numpy as np
import pytest

from sciml.errors import RunError

from sciml.solvers.rom import (AdaptiveROM, DofSpace, Partition, PartitionedHFModel, PointSpace, ReducedModel,
                               Tolerances, academic_plate, distinct_temperature_times, monitor_points, pod,
                               run_history, tangent_response, thermoelastic_snapshots)


def test_partitioned_hf_model_is_the_serial_one(small_plate):
    model, times, lf = academic_plate(**small_plate, centre=(1.4, 0.3), peak=750.0)
    ref = run_history(model, times[:5], lf[:5])
    hf = PartitionedHFModel(model, Partition(model.disc, block_size=7))
    state = hf.initial_state()
    for k in range(5):
        state = hf.solve_step(state, times[k], lf[k]).state
        np.testing.assert_allclose(state.u, ref.u[:, k], rtol=0, atol=1e-12 * np.abs(ref.u[:, k]).max())
        np.testing.assert_allclose(state.p, ref.p[:, k], rtol=0, atol=1e-12)
    assert ref.p[:, 4].max() > 0  # plastic steps were compared


def test_spaces_use_the_mass_matrix_and_the_quadrature_weights(small_plate):
    model, _, _ = academic_plate(**small_plate)
    part = Partition(model.disc, block_size=5)
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((model.disc.n_dof, 3)), rng.standard_normal((model.disc.n_dof, 2))
    M = model.disc.mass_matrix()
    np.testing.assert_allclose(DofSpace(part).gram(A, B), A.T @ (M @ B), rtol=1e-12)
    P, Q = rng.standard_normal((model.disc.n_qp, 3)), rng.standard_normal((model.disc.n_qp, 4))
    np.testing.assert_allclose(PointSpace(part).gram(P, Q), P.T @ (model.disc.qp_weights[:, None] * Q), rtol=1e-12)


def test_reduced_model_with_all_points_and_all_modes_reproduces_hf(training):
    hf, times, lf, snap = training
    u = snap.u.copy()
    u[hf.fixed_dofs] = 0.0
    basis = pod(u, DofSpace(hf.partition), tol=0.0)
    lift = np.zeros((hf.disc.n_dof, hf.n_factors))
    lift[hf.fixed_dofs] = hf.fixed_values
    rm = ReducedModel(hf.partition, hf.material, hf.model.temperature, basis.modes, lift,
                      np.arange(hf.disc.n_qp), hf.disc.qp_weights, rtol=1e-12)
    state = rm.initial_state()
    for k, (t, lam) in enumerate(zip(times, lf)):
        state, _ = rm.solve_step(state, t, lam)
        u_rom = lift @ hf.load_vector(lam) + basis.modes @ state.q
        np.testing.assert_allclose(u_rom, snap.u[:, k], rtol=0, atol=1e-8 * np.abs(snap.u[:, k]).max())
        np.testing.assert_allclose(state.material.p, snap.p[:, k], rtol=0, atol=1e-8)


def test_a_quadrature_that_cannot_integrate_the_stiffness_of_the_modes_is_refused(training):
    """Two points (eight strain components) cannot make the stiffness of the POD modes definite: Newton
    would return an arbitrary solution, so the reduced model is refused with the reason; all points pass."""
    hf, _, _, snap = training
    u = snap.u.copy()
    u[hf.fixed_dofs] = 0.0
    basis = pod(u, DofSpace(hf.partition), tol=0.0)
    assert basis.n_modes > 8
    lift = np.zeros((hf.disc.n_dof, hf.n_factors))
    args = (hf.partition, hf.material, hf.model.temperature, basis.modes, lift)
    ReducedModel(*args, np.arange(hf.disc.n_qp), hf.disc.qp_weights)
    with pytest.raises(RunError, match=rf"2 points with positive weight\) cannot integrate the stiffness of "
                                         rf"{basis.n_modes} modes"):
        ReducedModel(*args, np.array([3, 40]), np.array([0.7, 1.3]))


@pytest.fixture(scope="module")
def adaptive_runs(training, new_loading):
    hf, times, lf, ref = new_loading
    _, _, _, train = training
    rom = AdaptiveROM(hf, train, Tolerances(indicator=0.02, p_floor=1e-6), ecm_batch=4, tangent_snapshots=True)
    plain = rom.run(times, lf, adaptive=False)
    plain_states = list(rom.reconstruct(plain))
    rom.add_monitor_points(monitor_points(hf, times, 4))
    rom.enrich(*thermoelastic_snapshots(hf, distinct_temperature_times(hf, times, 2)))
    run = rom.run(times, lf, adaptive=True)
    return hf, ref, rom, plain, plain_states, run, list(rom.reconstruct(run))


def rel_errors(hf, ref, states):
    space = DofSpace(hf.partition)
    out = []
    for k, st in enumerate(states):
        d = (st.u - ref.u[:, k])[:, None]
        out.append(np.sqrt(space.gram(d, d)[0, 0] / space.gram(ref.u[:, k:k + 1], ref.u[:, k:k + 1])[0, 0]))
    return np.array(out)


def test_adaptive_rom_takes_hf_steps_and_beats_the_plain_rom(adaptive_runs):
    hf, ref, rom, plain, plain_states, run, states = adaptive_runs
    e_plain, e_adapt = rel_errors(hf, ref, plain_states), rel_errors(hf, ref, states)
    assert e_plain.max() > 1e-2  # the training basis cannot represent the new hot spot
    assert 0 < len(run.hf_steps) < len(run.records)
    assert e_adapt.max() < 0.1 * e_plain.max()
    for k in run.hf_steps:  # the accepted state is an HF step from the reconstructed previous state
        rec = run.records[k]
        prev = states[k - 1] if k else hf.initial_state()
        redo = hf.solve_step(prev, rec.t, rec.load_factor).state
        np.testing.assert_allclose(states[k].u, redo.u, rtol=0, atol=1e-12 * np.abs(redo.u).max())
        assert rec.indicator > rom.tol.indicator
    for rec in run.records:
        if not rec.hf:
            assert rec.indicator <= rom.tol.indicator
    assert rom.ecm_result.residual <= rom.tol.ecm
    assert rom.n_modes >= run.bases[0].shape[1] + len(run.hf_steps)  # tangent snapshots: up to 2 per HF step


def test_tangent_response_is_the_derivative_of_the_hf_step(new_loading):
    """Finite differences of the HF step in the load factor (same start state) against the
    consistent-tangent response."""
    hf, times, lf, _ = new_loading
    state = hf.initial_state()
    for k in range(5):
        prev, state = state, hf.solve_step(state, times[k], lf[k]).state
    h = 1e-6
    plus = hf.solve_step(prev, times[4], lf[4] + h).state
    minus = hf.solve_step(prev, times[4], lf[4] - h).state
    fd = (plus.u - minus.u) / (2 * h)
    du = tangent_response(hf, prev, state)[:, 0]
    assert state.p.max() > 0
    np.testing.assert_allclose(du, fd, rtol=0, atol=1e-5 * np.abs(fd).max())


def test_replayed_reduced_state_matches_the_reduced_model_at_its_points(adaptive_runs):
    """The full-field replay and the online reduced model run the same constitutive updates."""
    hf, ref, rom, plain, plain_states, run, states = adaptive_runs
    assert not run.records[-1].hf
    idx = hf.partition.local_index(rom.model.local_points)
    online = run.final.material
    assert online.p.max() > 0
    np.testing.assert_allclose(states[-1].p[idx], online.p, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(states[-1].material.eps_p[idx], online.eps_p, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(states[-1].sigma[idx], run.final.sigma, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- load groups
def _two_load_box(centre=(1.4, 0.3), peak=750.0):
    """The small plate's mesh on rollers, u_x on x = 2 (group 0) and a pressure on y = 1 (group 1),
    partitioned; the hot spot of the new loading."""
    from sciml.meshes import box_mesh_2d, boundary_faces, faces_on, nodes_on_plane
    from sciml.solvers.rom import Dirichlet, Discretisation, HFModel, ThermoViscoplasticJ2, hot_spot

    points, cells = box_mesh_2d(12, 6, 2.0, 1.0)
    disc = Discretisation(points, cells, "quad")
    top = disc.pressure_forces(faces_on(boundary_faces(cells, "quad"), nodes_on_plane(points, 1, 1.0)), 200.0)
    bcs = [Dirichlet.on_nodes(nodes_on_plane(points, k, 0.0), k, 2) for k in range(2)]
    bcs.append(Dirichlet.on_nodes(nodes_on_plane(points, 0, 2.0), 0, 2, 0.01, group=0))
    model = HFModel(disc, ThermoViscoplasticJ2.academic(), bcs, hot_spot(centre, peak, 0.3, 3.0),
                    tractions=np.column_stack([np.zeros(disc.n_dof), top]))
    return PartitionedHFModel(model, Partition(disc, block_size=8))


def _two_histories(n=12):
    from sciml.solvers.rom import load_history

    times = np.arange(1.0, n + 1.0)
    return times, np.column_stack([load_history("reversed", times), load_history("min(t/4, 1)", times)])


def test_tangent_responses_are_the_derivatives_in_each_load_factor():
    hf = _two_load_box()
    times, lf = _two_histories()
    state = hf.initial_state()
    for k in range(5):
        prev, state = state, hf.solve_step(state, times[k], lf[k]).state
    assert state.p.max() > 0
    du = tangent_response(hf, prev, state)
    assert du.shape == (hf.disc.n_dof, 2)
    h = 1e-6
    for g in range(2):
        e = h * np.eye(2)[g]
        plus, minus = (hf.solve_step(prev, times[4], lf[4] + s * e).state.u for s in (1, -1))
        fd = (plus - minus) / (2 * h)
        np.testing.assert_allclose(du[:, g], fd, rtol=0, atol=1e-5 * np.abs(fd).max())


def test_reduced_model_with_two_load_groups_and_every_mode_reproduces_hf():
    """Displacement cycles and a pressure ramp with their own factors: the reduced model on every
    point with every resolvable POD mode of the HF run is as close to it as the basis allows
    (the ramp makes steps that differ by less than the method of snapshots resolves, so the
    bound is the projection error, not round-off)."""
    hf = _two_load_box()
    times, lf = _two_histories()
    ref = run_history(hf.model, times, lf)
    assert ref.p.max() > 1e-4
    u = ref.u.copy()
    u[hf.fixed_dofs] = 0.0
    space = DofSpace(hf.partition)
    basis = pod(u, space, tol=0.0)
    lift = np.zeros((hf.disc.n_dof, 2))
    lift[hf.fixed_dofs] = hf.fixed_values
    rm = ReducedModel(hf.partition, hf.material, hf.model.temperature, basis.modes, lift,
                      np.arange(hf.disc.n_qp), hf.disc.qp_weights, rtol=1e-12, external=hf.external)
    state = rm.initial_state()
    for k, (t, lam) in enumerate(zip(times, lf)):
        state, _ = rm.solve_step(state, t, lam)
        err = lift @ lam + basis.modes @ state.q - ref.u[:, k]
        best = u[:, k] - basis.modes @ space.gram(basis.modes, u[:, k:k + 1])[:, 0]
        norm = lambda v: np.sqrt(space.gram(v[:, None], v[:, None])[0, 0])  # noqa: E731
        assert norm(err) <= 10 * norm(best) + 1e-10 * norm(ref.u[:, k]), k
