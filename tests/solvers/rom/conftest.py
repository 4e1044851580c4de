"""Shared fixtures of the ROM tests: a small plate and HF histories of two loadings."""

from __future__ import annotations

import numpy as np
import pytest

from sciml.solvers.rom import Partition, PartitionedHFModel, Snapshots, academic_plate

#: A 12 x 6 plate, one load cycle in 12 steps, the temperature ramp over 3 s.
SMALL = dict(nx=12, ny=6, n_steps=12, n_cycles=1, ramp_time=3.0)


def small_history(centre, peak, block_size=8):
    model, times, lf = academic_plate(**SMALL, centre=centre, peak=peak)
    hf = PartitionedHFModel(model, Partition(model.disc, block_size=block_size))
    state = hf.initial_state()
    U, S, P = [], [], []
    for t, lam in zip(times, lf):
        state = hf.solve_step(state, t, lam).state
        U.append(state.u)
        S.append(state.sigma)
        P.append(state.p)
    return hf, times, lf, Snapshots(np.column_stack(U), np.stack(S, axis=2), np.column_stack(P))


@pytest.fixture(scope="session")
def small_plate():
    """Keyword arguments of :func:`academic_plate` for the small plate."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def training():
    """HF run of the training loading (hot spot at (0.5, 0.5), 700 K)."""
    return small_history((0.5, 0.5), 700.0)


@pytest.fixture(scope="session")
def new_loading():
    """HF run of the new loading (hot spot at (1.4, 0.3), 750 K)."""
    return small_history((1.4, 0.3), 750.0)
