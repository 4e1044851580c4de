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

    python benchmarks/rom.py [--nx 160] [--ny 80] [--repeat 5] [--set rom.indicator_tol=0.03 ...] [--out DIR]

pyMOR is optional (``pip install pymor``); without it the POD comparison is skipped.

3D part (``--blade``): the rotating blade of ``cases/rom_blade_100k.yaml`` (>= 100k dofs; any
``--set`` applies to it, e.g. ``--set mesh.n_chord=16`` for a quick look). A full adaptive run
at that size takes hours here, so the 3D part trains on the first ``--train-steps`` steps
only: HF steps of the training loading give the snapshots, the ROM is built from them, and
the first ``--train-steps`` steps of the new loading are run by HF (the reference) and by the
adaptive ROM (``--thermoelastic-levels``, default 1, thermo-elastic enrichment; HF steps where
the indicator asks). It prints the CPU time of one HF step and of one online ROM step (a
reduced Newton step, not counting the ROM's HF steps), their ratio, and the ROM's errors:

    OMP_NUM_THREADS=1 python benchmarks/rom.py --blade [--train-steps 4] [--set hf.row_block=200000] \
        [--snapshots PATH]

``--snapshots PATH`` keeps the HF snapshots and step times of both loadings in
``PATH.rank<r>of<n>.npz`` and reuses them when present (the same overrides and step count),
so that the HF runs and the ROM part can be run separately.
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

    from sciml.cases.rom_adaptive import load_hf_history
    from sciml.solvers.rom import DofSpace, Partition, academic_plate, pod

    state = torch.load(folder / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)["state"]
    model, _, _ = academic_plate(nx, ny)
    U = load_hf_history(folder / "checkpoints", "training", state["hf"]["training"]["steps"])["u"]
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


BLADE = Path(__file__).resolve().parents[1] / "cases" / "rom_blade_100k.yaml"


def blade_step_ratio(overrides: list[str], train_steps: int, thermoelastic_levels: int,
                     snapshots: Path | None = None) -> dict:
    """HF step against online ROM step on the 3D blade, after a short training (see the module docstring).

    Returns the numbers it prints: ``n_dof``, ``hf_step_s`` (mean CPU time of the reference HF steps),
    ``rom_step_s`` (mean CPU time of the reduced Newton steps, those the indicator rejected included),
    ``ratio``, ``max_rel_error_u`` (adaptive ROM, mass norm, over the steps), ``max_rel_error_u_plain`` (the ROM as trained), ``hf_steps_used``.
    """
    from sciml.cases.rom_adaptive import hf_model
    from sciml.solvers.rom import (AdaptiveROM, DofSpace, Snapshots, Tolerances, distinct_temperature_times,
                                   monitor_points, thermoelastic_snapshots)

    cfg = load_case(BLADE, overrides).config
    comm = world()
    say = print if comm.is_root else (lambda *a, **k: None)
    hf_train, times, lf = hf_model(cfg, cfg.training, comm)
    hf_new, _, _ = hf_model(cfg, cfg.online, comm)
    times, lf = times[:train_steps], lf[:train_steps]
    disc = hf_new.disc
    say(f"blade {'x'.join(map(str, cfg.mesh.cells()))}: {disc.n_dof} dofs, {disc.n_qp} points, "
        f"HF solve {cfg.hf.linear_solver} "
        f"({cfg.hf.cg_settings()['preconditioner'] if cfg.hf.linear_solver == 'cg' else 'SuperLU'}), "
        f"{comm.size} rank(s); {train_steps} steps", flush=True)

    def hf_run(hf, name):
        state, U, S, P, secs = hf.initial_state(), [], [], [], []
        for k, (t, lam) in enumerate(zip(times.tolist(), lf.tolist())):
            t0 = time.process_time()
            step = hf.solve_step(state, t, lam)
            secs.append(comm.allreduce_max(time.process_time() - t0))
            state = step.state
            U.append(state.u)
            S.append(state.sigma)
            P.append(state.p)
            say(f"  HF {name} step {k + 1}: {secs[-1]:.1f} s CPU, {len(step.residuals) - 1} Newton iterations, "
                f"linear iterations {step.linear_iterations}, max p {comm.allreduce_max(float(state.p.max())):.2e}",
                flush=True)
        return Snapshots(np.column_stack(U), np.stack(S, axis=2), np.column_stack(P)), secs

    cache = None if snapshots is None else Path(f"{snapshots}.rank{comm.rank}of{comm.size}.npz")
    if cache is not None and cache.is_file():
        z = np.load(cache)
        if z["u_train"].shape != (disc.n_dof, train_steps):
            raise SystemExit(f"{cache}: snapshots of another mesh or step count, {z['u_train'].shape}")
        train = Snapshots(z["u_train"], z["s_train"], z["p_train"])
        ref, ref_secs = Snapshots(z["u_ref"], z["s_ref"], z["p_ref"]), z["ref_secs"].tolist()
        say(f"  HF snapshots read from {cache}; reference step CPU times {['%.1f' % s for s in ref_secs]} s")
    else:
        train, _ = hf_run(hf_train, "training")
        ref, ref_secs = hf_run(hf_new, "reference")
        if cache is not None:
            np.savez(cache, u_train=train.u, s_train=train.sigma, p_train=train.p, u_ref=ref.u, s_ref=ref.sigma,
                     p_ref=ref.p, ref_secs=np.array(ref_secs))
    r = cfg.rom
    t0 = time.process_time()
    tol = Tolerances(pod=r.pod_tol, ecm=r.ecm_tol, gappy=r.gappy_tol, indicator=r.indicator_tol, p_floor=r.p_floor,
                     max_modes=r.max_modes)
    rom = AdaptiveROM(hf_new, train, tol, ecm_batch=r.ecm_batch, tangent_snapshots=r.tangent_snapshots)
    build_s = comm.allreduce_max(time.process_time() - t0)
    plain = rom.run(times, lf, adaptive=False)
    t0 = time.process_time()
    rom.add_monitor_points(monitor_points(hf_new, times, r.monitor_points))
    levels = distinct_temperature_times(hf_new, times, thermoelastic_levels)
    if levels:
        rom.enrich(*thermoelastic_snapshots(hf_new, levels))
    setup_s = comm.allreduce_max(time.process_time() - t0)
    adaptive = rom.run(times, lf, adaptive=True, log=say)
    space = DofSpace(hf_new.partition)

    def max_error(run):
        states = list(rom.reconstruct(run))
        U = np.column_stack([s.u for s in states])
        d = space.gram(U - ref.u, U - ref.u).diagonal()
        n = space.gram(ref.u, ref.u).diagonal()
        return float(np.sqrt(np.max(d / n)))

    # every online step starts with a reduced Newton step (kept, or judged by the indicator and
    # replaced by an HF step): all of them count
    rom_steps = [rec.seconds["rom"] for rec in adaptive.records]
    rom_step_s = comm.allreduce_max(float(np.mean(rom_steps)))
    hf_step_s = float(np.mean(ref_secs))
    out = {"n_dof": disc.n_dof, "hf_step_s": hf_step_s, "rom_step_s": rom_step_s, "ratio": hf_step_s / rom_step_s,
           "max_rel_error_u": max_error(adaptive), "max_rel_error_u_plain": max_error(plain),
           "hf_steps_used": len(adaptive.hf_steps), "n_modes": rom.n_modes, "n_reduced_points": rom.model.n_points,
           "offline_build_s": build_s, "online_setup_s": setup_s}
    say(f"\n{'':30s}{'HF':>12s}{'ROM':>12s}{'ratio':>10s}")
    say(f"{'CPU time per step (s)':30s}{hf_step_s:12.3f}{rom_step_s:12.5f}{out['ratio']:10.0f}")
    say(f"  HF steps (reference): {['%.1f' % s for s in ref_secs]} s; reduced Newton steps: "
        f"{['%.2e' % s for s in rom_steps]} s")
    say(f"max rel. error u (M-norm): adaptive ROM {out['max_rel_error_u']:.3e} ({out['hf_steps_used']} HF steps of "
        f"{train_steps}), ROM as trained {out['max_rel_error_u_plain']:.3e}")
    say(f"ROM: {rom.n_modes} modes, {rom.model.n_points} reduced points; offline build {build_s:.1f} s, online "
        f"setup (monitor points, {len(levels)} thermo-elastic levels) {setup_s:.1f} s")
    say("metrics:", json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nx", type=int, default=160)
    parser.add_argument("--ny", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of the POD timings (best of)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="case override a.b=v")
    parser.add_argument("--blade", action="store_true", help="the 3D part: HF step against ROM step on the blade")
    parser.add_argument("--train-steps", type=int, default=4, help="--blade: HF steps of training and reference")
    parser.add_argument("--thermoelastic-levels", type=int, default=1, help="--blade: enrichment levels")
    parser.add_argument("--snapshots", type=Path, default=None, help="--blade: keep/reuse the HF snapshots here")
    parser.add_argument("--out", type=Path, default=None,
                        help="plate: run the case in this folder (kept; resumed from its checkpoint when it has one) "
                             "instead of a temporary one")
    args = parser.parse_args()
    if args.blade:
        blade_step_ratio(args.overrides, args.train_steps, args.thermoelastic_levels, args.snapshots)
        return
    overrides = [f"mesh.nx={args.nx}", f"mesh.ny={args.ny}", "output.paraview=false", "output.plots=false",
                 *args.overrides]
    case = load_case(CASE, overrides)
    comm = world()
    from sciml.registry import case_module

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.out or Path(scratch)
        run = Run(tmp, comm, resume=(tmp / "checkpoints" / "latest.pt").is_file())
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
