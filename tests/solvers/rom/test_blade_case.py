"""The rotating blade: centrifugal load against the exact integral over the body, a converged HF
step in equilibrium with the same answer from SuperLU and from AMG-preconditioned CG, and the
``rom_adaptive`` case on the blade: bad input rejected by the schema, a small run (with the CG
HF solve). Rank invariance of the CG solve: test_krylov.py; of the case: tests/cases/test_rom_case.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.integrate import quad

from sciml.config import ConfigError, load_case
from sciml.meshes import naca_thickness
from sciml.solvers.rom import CGSolver, DirectSolver, Partition, PartitionedHFModel, academic_blade

from support import CASES, run_sciml

SMALL = dict(n_chord=8, n_thickness=2, n_span=6, n_steps=6, ramp_time=2.0)


def test_centrifugal_load_matches_the_exact_integral():
    """sum_a f_a = rho omega^2 int r_perp dV; along z (the span, radial) that is
    rho omega^2 int (z + R_hub) A(z) dz with A(z) = c(z)^2 * (area of the unit section)."""
    rho, omega, hub = 8.2e-9, 3000.0, 100.0
    model, _, _ = academic_blade(n_chord=32, n_thickness=8, n_span=16, density=rho, omega=omega, hub_radius=hub)
    F = model.external[:, 0].reshape(-1, 3).sum(axis=0)
    unit = quad(lambda s: 2.0 * naca_thickness(s, 0.2), 0.02, 0.9)[0]
    exact_z = rho * omega**2 * quad(lambda z: (z + hub) * unit * (20.0 - 6.0 * z / 40.0) ** 2, 0.0, 40.0)[0]
    assert F[0] == 0.0  # the rotation axis is x: no axial component
    assert F[2] == pytest.approx(exact_z, rel=5e-3)


@pytest.fixture(scope="module")
def blade_steps():
    model, times, lf = academic_blade(**SMALL)
    out = {}
    for name, solver in (("direct", DirectSolver()), ("cg_amg", CGSolver(row_block=150, amg=True))):
        hf = PartitionedHFModel(model, Partition(model.disc, block_size=16), solver)
        state, steps = hf.initial_state(), []
        for t, lam in zip(times[:4], lf[:4]):
            step = hf.solve_step(state, t, lam)
            state = step.state
            steps.append(step)
        out[name] = (hf, steps, lf[:4])
    return out


def test_blade_hf_steps_converge_in_equilibrium(blade_steps):
    hf, steps, lf = blade_steps["direct"]
    assert steps[-1].state.p.max() > 1e-4  # the hot spot has made the blade plastic
    for step, lam in zip(steps, lf):
        assert step.residuals[-1] <= 1e-9 * max(step.residuals)
        # free dofs balance the centrifugal load; the root reactions carry the rest
        f = hf.internal_forces(step.state.sigma)
        r = f[hf.free_dofs] - lam * hf.external[hf.free_dofs, 0]
        assert np.linalg.norm(r) <= 1e-9 * np.linalg.norm(f)
        reaction = f.reshape(-1, 3).sum(axis=0)  # internal forces of a body sum to zero
        assert np.abs(reaction).max() <= 1e-9 * np.abs(f).max()


def test_blade_cg_with_amg_equals_superlu(blade_steps):
    _, direct, _ = blade_steps["direct"]
    _, cg, _ = blade_steps["cg_amg"]
    for a, b in zip(direct, cg):
        assert np.abs(b.state.u - a.state.u).max() <= 1e-8 * np.abs(a.state.u).max()
        assert len(b.linear_iterations) == len(b.residuals) - 1


@pytest.mark.parametrize("override, message", [
    ("mesh.nx=10", "'nx' is not a key of geometry 'blade'"),
    ("training.centre=[1,2]", "training.centre: expected 3 coordinates"),
    ("hf.linear_solver=gmres", "expected one of direct or cg"),
    ("hf.cg_rtol=0.5", "'cg_rtol' is a key of linear_solver: cg"),
    ("blade.omega=-3", "blade.omega: must be at least 0"),
    ("loading.amplitude=0.1", "the blade has no imposed displacement"),
])
def test_bad_blade_input_is_rejected(override, message):
    with pytest.raises(ConfigError) as err:
        load_case(CASES / "rom_blade.yaml", [override])
    assert message in str(err.value)


def test_shipped_blade_cases_validate():
    small = load_case(CASES / "rom_blade.yaml").config
    big = load_case(CASES / "rom_blade_100k.yaml").config
    assert small.mesh.geometry == big.mesh.geometry == "blade"
    m = big.mesh
    assert 3 * (m.n_chord + 1) * (m.n_thickness + 1) * (m.n_span + 1) >= 100_000
    assert big.hf.linear_solver == "cg"


TINY = """\
kind: rom_adaptive
mesh: {geometry: blade, n_chord: 6, n_thickness: 2, n_span: 4, block_size: 8}
loading: {n_steps: 6, n_cycles: 1, ramp_time: 2.0}
training: {centre: [-3.0, 0.0, 26.0], peak: 700.0, radius: 6.0}
online: {centre: [4.0, 1.0, 14.0], peak: 750.0, radius: 6.0}
hf: {linear_solver: cg, row_block: 60}
rom: {monitor_points: 4, thermoelastic_levels: 2, ecm_batch: 4}
output: {plots: false}
"""


def test_small_blade_case_runs(tmp_path):
    case = tmp_path / "tiny_blade.yaml"
    case.write_text(TINY)
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert a["n_dof"] == 3 * 7 * 3 * 5 and a["world_size"] == 1
    assert (tmp_path / "run" / "fields.pvd").is_file()
    assert a["max_rel_error_u"] < 1e-2 < a["max_rel_error_u_nonadaptive"]
    assert 0 < a["hf_steps_used"] < a["n_steps"]
