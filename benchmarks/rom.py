"""Adaptive POD-ROM on the academic plate: HF against ROM, and our POD against pyMOR's.

Runs the ``rom_adaptive`` case (``cases/rom_plate.yaml``, mesh 160x80 by default, the
issue's benchmark size) in a temporary run folder and prints

* HF against the adaptive ROM: CPU time per step, whole-run CPU time (the ROM's includes its
  enrichment, HF steps, replays and basis/ECM updates), speed-ups, errors, and the plain
  (non-adaptive) ROM's error (the case measures CPU time, :func:`time.process_time`: run it
  with ``OMP_NUM_THREADS=1``);
* the offline POD of the training displacements (mass inner product, tolerance 1e-6):
  ours (block-ordered Gram matrix, ``sciml.solvers.rom.pod``) against pyMOR's
  ``pod(..., product=M, l2_err=...)`` (method of snapshots), measured in the same run on
  the same snapshots: time, modes, and the distance between the two projectors.

    python benchmarks/rom.py [--nx 160] [--ny 80] [--repeat 5] [--set rom.indicator_tol=0.03 ...]

pyMOR is optional (``pip install pymor``); without it the POD comparison is skipped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sciml.config import load_case
from sciml.parallel import world
from sciml.runs import Run

CASE = Path(__file__).resolve().parents[1] / "cases" / "rom_plate.yaml"


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pod_comparison(folder: Path, nx: int, ny: int, block_size: int, tol: float, repeat: int) -> list[tuple]:
    import torch

    from sciml.solvers.rom import DofSpace, Partition, academic_plate, pod

    state = torch.load(folder / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)["state"]
    model, _, _ = academic_plate(nx, ny)
    U = np.asarray(state["training"]["u"]).copy()
    U[model.fixed_dofs] = 0.0
    space = DofSpace(Partition(model.disc, block_size=block_size))
    t_ours, ours = best_of(lambda: pod(U, space, tol), repeat)
    M = model.disc.mass_matrix()
    rows = [("POD (ours, block-ordered Gram)", t_ours, ours.n_modes, 0.0)]
    try:
        from pymor.algorithms.pod import pod as pymor_pod
        from pymor.core.logger import set_log_levels
        from pymor.operators.numpy import NumpyMatrixOperator
        from pymor.vectorarrays.numpy import NumpyVectorSpace
    except ImportError:
        rows.append(("POD (pyMOR)", float("nan"), 0, float("nan")))
        return rows
    set_log_levels({"pymor": "ERROR"})
    product = NumpyMatrixOperator(M)
    va = NumpyVectorSpace.from_numpy(U)
    energy = float(np.sqrt(np.trace(U.T @ (M @ U))))
    t_pm, (modes, svals) = best_of(lambda: pymor_pod(va, product=product, l2_err=tol * energy, rtol=0.0), repeat)
    Vp = modes.to_numpy()
    # distance of the projectors on the snapshots: || (P_ours - P_pymor) U ||_M / ||U||_M
    k = min(Vp.shape[1], ours.n_modes)
    diff = ours.modes[:, :k] @ (ours.modes[:, :k].T @ (M @ U)) - Vp[:, :k] @ (Vp[:, :k].T @ (M @ U))
    dist = float(np.sqrt(np.trace(diff.T @ (M @ diff))) / energy)
    rows.append(("POD (pyMOR, method of snapshots)", t_pm, Vp.shape[1], dist))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nx", type=int, default=160)
    parser.add_argument("--ny", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of the POD timings (best of)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="case override a.b=v")
    args = parser.parse_args()
    overrides = [f"mesh.nx={args.nx}", f"mesh.ny={args.ny}", "output.paraview=false", "output.plots=false",
                 *args.overrides]
    case = load_case(CASE, overrides)
    comm = world()
    from sciml.registry import case_module

    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp), comm)
        t0 = time.perf_counter()
        m = case_module("rom_adaptive").run(case.config, run)
        total = time.perf_counter() - t0
        run.close()
        pod_rows = pod_comparison(Path(tmp), args.nx, args.ny, case.config.mesh.block_size, case.config.rom.pod_tol,
                                  args.repeat) if comm.is_root else []
    if not comm.is_root:
        return
    n = m["n_steps"]
    print(f"\nadaptive POD-ROM, plate {args.nx}x{args.ny} ({m['n_dof']} dofs, {m['n_integration_points']} points), "
          f"{n} steps, {comm.size} rank(s); case wall time {total:.1f} s")
    print(f"{'':34s}{'HF':>12s}{'adaptive ROM':>14s}{'ratio HF/ROM':>14s}")
    rom_step = m["hf_s"] / n / m["speedup_online_step"]
    print(f"{'CPU time per step (s)':34s}{m['hf_s'] / n:12.4f}{rom_step:14.4f}{m['speedup_online_step']:14.1f}")
    print(f"{'whole new run, CPU (s)':34s}{m['hf_s']:12.2f}{m['online_s']:14.2f}{m['speedup_online_total']:14.2f}")
    parts = ", ".join(f"{k} {v:.2f}" for k, v in m["online_parts_s"].items())
    print(f"  ROM run parts (s): {parts}")
    print(f"  HF steps taken by the ROM: {m['hf_steps_used']}/{n} at steps {m['hf_steps']}")
    print(f"{'max rel. error u (M-norm)':34s}{'-':>12s}{m['max_rel_error_u']:14.3e}   plain ROM "
          f"{m['max_rel_error_u_nonadaptive']:.3e}, enriched only {m['max_rel_error_u_enriched_nonadaptive']:.3e}")
    print(f"{'max rel. error p (L2)':34s}{'-':>12s}{m['max_rel_error_p']:14.3e}   Gappy-POD p "
          f"{m['max_rel_error_p_gappy']:.3e}")
    print(f"{'indicator/error Spearman':34s}{'-':>12s}{m['indicator_error_spearman']:14.3f}")
    print(f"{'modes / ECM points / reduced pts':34s}{'-':>12s}{m['n_modes']:6d} / {m['n_ecm_points']} / "
          f"{m['n_reduced_points']}")
    print(f"{'offline (HF training + build) (s)':34s}{m['offline_s'] - m['offline_build_s']:12.2f}"
          f"{m['offline_build_s']:14.2f}")
    print(f"\noffline POD of the {n} training snapshots (tol {case.config.rom.pod_tol:g}), best of {args.repeat}:")
    print(f"{'':34s}{'time (s)':>12s}{'modes':>8s}{'|P - P_ours| U / |U|':>24s}{'ratio':>8s}")
    for name, t, k, dist in pod_rows:
        print(f"{name:34s}{t:12.4f}{k:8d}{dist:24.2e}{t / pod_rows[0][1]:8.2f}")
    print("\nmetrics:", json.dumps({k: v for k, v in m.items() if k != "online_parts_s"}))


if __name__ == "__main__":
    main()
