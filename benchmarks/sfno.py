"""Spectral-Refiner (SFNO + residual fine-tuning) against the FNO3d baseline, end to end.

Runs the ``sfno`` case presets through the case code (``sciml run``: data generated
or reused from the cache, SFNO and FNO3d trained on the same data for the same epochs,
the SFNO fine-tuned per test trajectory) and prints one table per preset: the SFNO
against its peer measured in the same run (neuraloperator's FNO3d of about the same
parameter count), the fine-tuning's gains, the estimator's rank correlation with the
true error, and fine-tuning time against our solver's time for the same trajectory on
the same grid. The goals of the issue are shown beside the measured ratios; they are
reported, not enforced.

    python benchmarks/sfno.py [--cases cases/sfno_fno_cpu.yaml cases/sfno_mcwilliams_cpu.yaml]
        [--out runs/bench_sfno] [--set training.epochs=4 ...] [--threads 2]

``--step-timing`` instead times one training step (forward + backward, batch
``training.batch_size``, random input at ``training.resolution``) of each case's SFNO
(built as the case builds it, ``sciml.cases.sfno.build_sfno``) with the spatial
transforms of its spectral layers as FFTs and as truncated DFT matrices
(``sciml.solvers.sfno.layers.MATRIX_DFT_MAX_FRACTION``), interleaved in one process,
CPU time, medians:

    OMP_NUM_THREADS=1 python benchmarks/sfno.py --step-timing [--repeats 7] [--threads 1]

Metrics are medians over the test trajectories (relative L²(0,T;L²); the residual in
L²(0,T;H⁻¹)). A run folder that already holds metrics.json is reported, not rerun
(delete it, or pass --rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_case(case: Path, out: Path, overrides: list[str], rerun: bool) -> dict:
    from sciml.cli import main as cli

    if rerun or not (out / "metrics.json").is_file():
        args = ["run", str(case), "--out", str(out)]
        for o in overrides:
            args += ["--set", o]
        status = cli(args)
        if status != 0:
            raise SystemExit(f"sciml run {case} failed with status {status}")
    return json.loads((out / "metrics.json").read_text())


def table(name: str, m: dict, goals: dict) -> str:
    from sciml.cases.sfno import zero_shot_key

    grids = m.get("zero_shot_grid"), m.get("train_grid")
    zero_shot = zero_shot_key(*grids) if None not in grids else None  # None: a run of before train_grid

    def fmt(x: float) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    rows = [
        ("persistence rel. L2 (last input frame held)", m.get("rel_l2_persistence"), None),
        ("SFNO rel. L2, training grid", m.get("rel_l2_train_res"), None),
        ("FNO3d rel. L2, training grid (peer)", m.get("rel_l2_fno"), None),
        ("  FNO3d / SFNO", _ratio(m.get("rel_l2_fno"), m.get("rel_l2_train_res")), "> 1"),
        (f"SFNO rel. L2 zero-shot at {m.get('zero_shot_grid')}²", m.get(zero_shot), None),
        (f"rel. L2 before fine-tuning ({m.get('zero_shot_grid')}², dt {m.get('finetune_frame_dt', 0):g})",
         m.get("rel_l2_before_ft"), None),
        ("rel. L2 after fine-tuning", m.get("rel_l2_after_ft"), None),
        ("  error before / after (median of ratios)", m.get("finetune_error_ratio"), f">= {goals['error']}"),
        ("residual H-1 before", m.get("residual_hm1_before_ft"), None),
        ("residual H-1 after", m.get("residual_hm1_after_ft"), None),
        ("residual H-1 of the true trajectories", m.get("residual_hm1_true"), None),
        ("  true / untuned residual (median of ratios)", m.get("residual_floor_ratio"), "<= 0.1"),
        ("  residual before / after (median of ratios)", m.get("finetune_residual_ratio"), ">= 10"),
        ("Spearman(residual, error) before fine-tuning, all test trajectories", m.get("estimator_error_spearman"),
         ">= 0.8"),
        ("Spearman(residual, error) after fine-tuning, fine-tuned ones", m.get("estimator_error_spearman_after_ft"),
         None),
        ("fine-tuning s / trajectory", m.get("finetune_s_per_traj"), None),
        ("solver s / trajectory (same grid)", m.get("solver_s_per_traj"), None),
        ("  fine-tuning / solver", _ratio(m.get("finetune_s_per_traj"), m.get("solver_s_per_traj")), None),
        ("SFNO / FNO3d parameters", _ratio(m.get("sfno_parameters"), m.get("fno_parameters")), None),
        ("SFNO / FNO3d training seconds", _ratio(m.get("sfno_train_s"), m.get("fno_train_s")), None),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"== {name}: {m.get('n_train')} training windows, {m.get('n_test')} test, "
             f"{m.get('n_finetune')} fine-tuned", f"{'quantity':<{width}}{'measured':>12}  goal"]
    lines += [f"{label:<{width}}{fmt(value):>12}  {goal or ''}" for label, value, goal in rows]
    return "\n".join(lines)


def step_timing(case: Path, repeats: int) -> str:
    """One SFNO training step of ``case`` with FFT and with DFT-matrix transforms (CPU ms, medians)."""
    import statistics
    import time

    import torch

    from sciml.cases.sfno import build_sfno
    from sciml.config import load_case
    from sciml.solvers import count_parameters
    from sciml.solvers.sfno import layers

    cfg = load_case(case).config
    w, tr = cfg.window, cfg.training
    torch.manual_seed(0)
    net = build_sfno(cfg)  # the case's model, every model setting included
    x = torch.randn(tr.batch_size, w.n_in, tr.resolution, tr.resolution)
    default = layers.MATRIX_DFT_MAX_FRACTION
    times: dict[str, list[float]] = {"fft": [], "matrix": []}
    try:
        for rep in range(repeats + 1):  # the first round warms up
            for path, fraction in (("fft", 0.0), ("matrix", default)):
                layers.MATRIX_DFT_MAX_FRACTION = fraction
                net.zero_grad(set_to_none=True)
                t0 = time.process_time()
                net(x).square().mean().backward()
                if rep:
                    times[path].append(1e3 * (time.process_time() - t0))
    finally:
        layers.MATRIX_DFT_MAX_FRACTION = default
    fft, mat = statistics.median(times["fft"]), statistics.median(times["matrix"])
    return (f"| {case.stem} | {count_parameters(net)} | {tr.batch_size} x {w.n_in} -> {w.n_out} at {tr.resolution}² "
            f"| {fft:.0f} | {mat:.0f} | {fft / mat:.2f} |")


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", type=Path,
                        default=[REPO / "cases" / "sfno_fno_cpu.yaml", REPO / "cases" / "sfno_mcwilliams_cpu.yaml"])
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench_sfno")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override applied to every case (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rerun", action="store_true", help="rerun cases whose folder already has metrics.json")
    parser.add_argument("--step-timing", action="store_true",
                        help="only time one training step with FFT vs DFT-matrix spectral transforms")
    parser.add_argument("--repeats", type=int, default=7, help="--step-timing: timed samples per path")
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"# {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.step_timing:
        print("| case | SFNO parameters | step | FFT CPU ms | DFT matrices CPU ms | FFT / matrices |\n"
              "|---|---:|---|---:|---:|---:|")
        for case in args.cases:
            print(step_timing(case, args.repeats))
        return
    tables = []
    for case in args.cases:
        metrics = run_case(case, args.out / case.stem, args.overrides, args.rerun)
        goals = {"error": 3 if "mcwilliams" in case.stem else 2}
        tables.append(table(case.stem, metrics, goals))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
