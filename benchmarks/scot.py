"""Poseidon-style scOT: the sample-efficiency study and training throughput against an FNO.

Two parts, each printing a table:

1. ``study``: runs the ``scot`` case preset (``cases/scot_cpu.yaml`` by default: pretraining
   on two Navier–Stokes operators, fine-tuning on a third for M = 2..64 against scOT from
   scratch and neuraloperator's FNO for M up to 256) through ``sciml run`` and prints the
   E(M) table, the fitted power laws, the accuracy and efficiency gains at M*, and the
   errors at seen/unseen lead times and in rollout. A run folder that already holds
   ``metrics.json`` is reported, not rerun (``--rerun`` forces it); an interrupted one is
   resumed.
2. ``throughput``: training samples per second (forward + backward + AdamW step) of the
   scOT preset and of an FNO with about as many parameters, same batch, same process,
   interleaved repeats, medians. With CUDA, also the Poseidon-T preset at 128².

    python benchmarks/scot.py [--parts study throughput] [--case cases/scot_cpu.yaml]
        [--out runs/scot_cpu] [--threads 2] [--batch 16] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the study
def study(case: Path, out: Path, rerun: bool) -> None:
    from sciml.cli import main as cli

    if rerun or not (out / "metrics.json").is_file():
        args = ["resume", str(out)] if (out / "checkpoints" / "latest.pt").is_file() and not rerun else \
            ["run", str(case), "--out", str(out)]
        status = cli(args)
        if status != 0:
            raise SystemExit(f"sciml {' '.join(args)} failed with status {status}")
    m = json.loads((out / "metrics.json").read_text())
    print(f"\n## E(M): median relative L1 (%) at the final time, {m['n_test']} test trajectories, "
          f"{m['resolution']}² ({out})\n")
    rows = {}
    for r in m["results"]:
        rows.setdefault(r["M"], {})[r["model"]] = r["rel_l1_final"]
    names = ("scot_pretrained", "scot_scratch", "fno")
    print("| M | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for mm in sorted(rows):
        print(f"| {mm} | " + " | ".join(f"{rows[mm][n]:.2f}" if n in rows[mm] else "" for n in names) + " |")
    print()
    for n in names:
        fit = m.get(f"fit_{n}")
        if fit:
            print(f"fit {n}: E(M) = {fit['C']:.3g} M^{-fit['alpha']:.3f}  ({m.get(f'{n}_parameters')} parameters)")
    goal = lambda v, g: "n/a" if v is None else ("met" if v >= g else "not met")  # noqa: E731
    ag, eg = m.get("accuracy_gain"), m.get("efficiency_gain")
    seen, unseen = m.get("median_rel_l1_seen_lead_times"), m.get("median_rel_l1_unseen_lead_times")
    if m.get("efficiency_gain_unbounded"):
        eg_text = "unbounded (the FNO's fitted error does not fall with M: the fit decides nothing)"
    else:
        eg_text = (f"{eg:.3g} (goal >= 4: {goal(eg, 4)}"
                   f"{', extrapolated beyond the FNO sizes' if m.get('efficiency_gain_extrapolated') else ''})")
    print(f"\nat M* = {m['m_star']}: AG = {ag:.3g} (goal >= 2: {goal(ag, 2)}), EG from the fits = {eg_text}")
    if m.get("efficiency_gain_measured") is not None:
        egm, bound = m["efficiency_gain_measured"], m.get("efficiency_gain_measured_is_lower_bound")
        verdict = "unknown" if bound and egm < 4 else goal(egm, 4)
        print(f"EG from the measured FNO errors, no fit: {'> ' if bound else ''}{egm:.3g} (goal >= 4: {verdict})")
    if seen is not None and unseen is not None:
        print(f"lead times ({m.get('lead_time_model')}): seen {seen:.3f} %, unseen {unseen:.3f} % "
              f"(ratio {unseen / seen:.3f}, goal <= 1.5: {'met' if unseen <= 1.5 * seen else 'not met'}); "
              f"rollout {m.get('median_rel_l1_rollout'):.3f} %")


# --------------------------------------------------------------------------- throughput
def _train_step_timer(model, x, t, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = (model(x, t) - y).abs().mean()
        loss.backward()
        opt.step()
    return step


def _fno_like(n_params: int, channels: int, modes: int):
    from sciml.solvers import count_parameters
    from sciml.solvers.scot.baseline import TimeFNO

    best = None
    for width in range(8, 129, 2):
        net = TimeFNO(channels, modes=modes, width=width, n_layers=4)
        count = count_parameters(net)
        if best is None or abs(count - n_params) < abs(best[1] - n_params):
            best = (net, count)
        if count > n_params:
            break
    return best[0]


def throughput(preset: str, batch: int, repeats: int, device: str) -> list[tuple]:
    from sciml.solvers import count_parameters
    from sciml.solvers.scot import ScOT, ScOTConfig

    cfg = ScOTConfig.preset(preset, in_channels=2, out_channels=2) if preset == "cpu" else ScOTConfig.preset(preset)
    torch.manual_seed(0)
    scot = ScOT(cfg).to(device)
    n_scot = count_parameters(scot)
    fno = _fno_like(n_scot, cfg.in_channels, modes=16).to(device)
    n_fno = count_parameters(fno)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    y, t = torch.randn_like(x), torch.rand(batch, device=device)
    steps = {
        "scot": _train_step_timer(scot, x, t, y, torch.optim.AdamW(scot.parameters(), lr=1e-5)),
        "fno": _train_step_timer(fno, x, t, y, torch.optim.AdamW(fno.parameters(), lr=1e-5)),
    }
    times = {k: [] for k in steps}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for f in steps.values():  # warm-up
        f()
    for _ in range(repeats):
        for k, f in steps.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return [(preset, cfg.image_size, batch, device, n_scot, batch / med["scot"], n_fno, batch / med["fno"],
             med["fno"] / med["scot"])]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["study", "throughput"], choices=["study", "throughput"])
    p.add_argument("--case", type=Path, default=REPO / "cases" / "scot_cpu.yaml")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "scot_cpu")
    p.add_argument("--rerun", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# scOT benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads; command: python {' '.join(sys.argv)}")
    if "throughput" in args.parts:
        rows = throughput("cpu", args.batch, args.repeats, "cpu")
        if torch.cuda.is_available():
            rows += throughput("T", args.batch, args.repeats, "cuda")
        print("\n## training throughput (samples/s, fwd + bwd + AdamW, medians)\n")
        print("| preset | grid | batch | device | scOT params | scOT samples/s | FNO params | FNO samples/s | "
              "scOT/FNO speed |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]}² | {r[2]} | {r[3]} | {r[4] / 1e6:.2f}M | {r[5]:.1f} | {r[6] / 1e6:.2f}M | "
                  f"{r[7]:.1f} | {r[8]:.2f} |")
    if "study" in args.parts:
        study(args.case, args.out, args.rerun)


if __name__ == "__main__":
    main()
