"""Pseudo-spectral 2D Navier–Stokes, RK4–CN: our solver against torch-cfd and the FFT floor.

Ours: :class:`sciml.solvers.navier_stokes.RK4CN` on :class:`NavierStokes2D`. Peer:
torch-cfd's ``NavierStokes2DSpectral`` driven by its ``RK4CrankNicolsonStepper``
(low-storage Carpenter–Kennedy RK4 with Crank–Nicolson per stage, the scheme of
jax-cfd), measured in the same run, interleaved repeat by repeat. Both take the
same number of steps of the same size on the same problem: the FNO benchmark case
on [0, 1)^2, viscosity 1e-3, Gaussian random field vorticity (alpha 2.5, tau 7,
seeds 0..B-1) passed through our 2/3 mask so that both start from the same
band-limited state, dt = 0.5 dx / max|u| of that state; forcing either none or the
FNO forcing 0.1 (sin 2pi(x+y) + cos 2pi(x+y)) (torch-cfd's ``SinCosForcing`` in
vorticity form, which it re-evaluates on the mesh and transforms at every stage).

FFT floor: the bare transforms one RK4–CN step needs, 5 stages x (irfft2 of the
stacked spectra of u, v, dw/dx, dw/dy + rfft2 of the advection term), timed with
preallocated outputs.

Correctness: relative L2 difference of the final physical vorticity, ours against
the peer, in float32 (the timed runs) and in float64 (the peer built with float64
coefficients and meshes), the latter both with the peer's own 2/3 filter and with
our mask put into the peer. The 2/3 conventions coincide for N = 1 (mod 3), e.g.
64 and 256; torch-cfd's brick-wall filter also keeps the row m_x = -ceil(N/3) when
N = 2 (mod 3), e.g. 128 and 512, and the rows m_x = +-N/3 when N = 0 (mod 3).

    python benchmarks/navier_stokes.py [--sizes 128 256 512] [--batch 4] [--steps 5]
        [--repeats 7] [--threads 2] [--forcing none fno] [--clock wall] [--no-float64-check]

On a shared machine the samples are noisy: the three contenders are timed in
rotating order within each repeat, the table gives medians, the speed-up of the
medians, the range of the per-repeat (paired) speed-ups and the load average. When
other processes hold the cores, every multi-threaded kernel waits for its second
thread to be scheduled, so wall-clock ratios then count kernels rather than work;
``--threads 1 --clock cpu`` (CPU time of this process) measures the work instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from sciml.operators.spectral import FourierGrid2D
from sciml.solvers.navier_stokes import (
    RK4CN,
    NavierStokes2D,
    advance,
    fno_forcing,
    gaussian_random_field,
)

VISCOSITY = 1e-3
LENGTH = 1.0
CFL = 0.5


def _peer_modules():
    try:
        from torch_cfd import forcings, grids, spectral
    except ImportError as err:  # the peer is optional for the package, not for this benchmark
        raise SystemExit(
            f"this benchmark needs the peer torch-cfd ({err}): "
            "`.venv/bin/pip install torch-cfd` (it keeps torch 2.13; check with --dry-run)"
        ) from err
    return grids, spectral, forcings


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch-cfd builds its meshes, filter, RK coefficients and forcing in the default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


class Problem:
    """One (N, forcing, dtype) case: our equation, the peer's, the initial spectrum, dt."""

    def __init__(self, n: int, batch: int, forcing: str, dtype: torch.dtype) -> None:
        self.n, self.forcing, self.dtype = n, forcing, dtype
        self.grid = g = FourierGrid2D(n, LENGTH, dtype=dtype)
        f = fno_forcing(g) if forcing == "fno" else None
        self.ours = NavierStokes2D(g, VISCOSITY, forcing=f)
        self.stepper = RK4CN()
        w0 = gaussian_random_field(g, seeds=range(batch))
        # Band-limited by our mask, so that both solvers start from the same state.
        self.w_hat0 = torch.fft.rfft2(w0) * g.dealias
        self.dt = self.ours.cfl_dt(self.w_hat0, CFL)

    def peer(self, our_mask: bool = False):
        """torch-cfd's equation and RK4–CN stepper; its own 2/3 filter unless ``our_mask``."""
        grids, spectral, forcings = _peer_modules()
        with default_dtype(self.dtype):
            grid = grids.Grid((self.n, self.n), domain=((0.0, LENGTH), (0.0, LENGTH)))
            forcing_fn = None
            if self.forcing == "fno":
                forcing_fn = forcings.SinCosForcing(
                    grid=grid, scale=0.1, diam=LENGTH, wave_number=1, vorticity=True
                )
            eq = spectral.NavierStokes2DSpectral(
                VISCOSITY,
                grid,
                smooth=True,
                forcing_fn=forcing_fn,
                step_fn=spectral.RK4CrankNicolsonStepper(),
            )
        if our_mask:
            eq.filter = self.grid.dealias.clone()
        return eq

    def run_ours(self, steps: int) -> Tensor:
        return advance(self.ours, self.stepper, self.w_hat0, steps * self.dt, steps)

    def run_peer(self, peer, steps: int) -> Tensor:
        with default_dtype(self.dtype):  # its forcing is evaluated on a fresh mesh at every stage
            w_hat, _ = peer(self.w_hat0, self.dt, steps=steps)
        return w_hat

    def rel_l2(self, a_hat: Tensor, b_hat: Tensor) -> float:
        """``||a - b|| / ||b||`` of the physical fields, over the whole batch."""
        s = (self.n, self.n)
        a, b = torch.fft.irfft2(a_hat, s=s), torch.fft.irfft2(b_hat, s=s)
        return float((a - b).norm() / b.norm())


def fft_floor(n: int, batch: int, dtype: torch.dtype) -> Callable[[int], None]:
    """``steps -> None``: the transforms of ``steps`` RK4–CN steps, outputs preallocated."""
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    spec = torch.randn((batch, 4, n, n // 2 + 1), dtype=cdtype)
    fields = torch.empty((batch, 4, n, n), dtype=dtype)
    adv = torch.randn((batch, n, n), dtype=dtype)
    adv_hat = torch.empty((batch, n, n // 2 + 1), dtype=cdtype)

    def run(steps: int) -> None:
        for _ in range(5 * steps):
            torch.fft.irfft2(spec, s=(n, n), out=fields)
            torch.fft.rfft2(adv, out=adv_hat)

    return run


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> tuple[float, object]:
    start = clock()
    out = fn()
    return clock() - start, out


def _masks_differ(problem: Problem) -> int:
    """Number of rfft modes kept by one 2/3 filter and not the other."""
    peer = problem.peer()
    return int((peer.filter.to(problem.grid.dtype) != problem.grid.dealias).sum())


@dataclasses.dataclass(frozen=True)
class SpeedRow:
    n: int
    forcing: str
    samples: dict[str, list[float]]  # seconds per step, per contender
    rel_l2: float  # final fields, ours vs peer, float32
    load: float  # 1-min load average when the row finished

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def best(self, name: str) -> float:
        return min(self.samples[name])

    def paired(self) -> list[float]:
        """Per-repeat speed-ups peer / ours (neighbours in time)."""
        return [p / o for p, o in zip(self.samples["peer"], self.samples["ours"])]


def time_case(
    prob: Problem,
    floor: Callable[[int], None],
    steps: int,
    repeats: int,
    clock: Callable[[], float],
) -> SpeedRow:
    """Interleaved samples of ours, the peer and the FFT floor, the order rotating per repeat."""
    peer = prob.peer()
    contenders: dict[str, Callable[[], object]] = {
        "ours": lambda: prob.run_ours(steps),
        "peer": lambda: prob.run_peer(peer, steps),
        "floor": lambda: floor(steps),
    }
    names = list(contenders)
    samples: dict[str, list[float]] = {k: [] for k in names}
    last: dict[str, object] = {}
    with torch.no_grad():
        prob.run_ours(1), prob.run_peer(peer, 1), floor(1)  # warm-up: plans, caches, buffers
        for r in range(repeats):
            for name in names[r % 3 :] + names[: r % 3]:
                seconds, last[name] = timed(contenders[name], clock)
                samples[name].append(seconds / steps)
    return SpeedRow(
        prob.n, prob.forcing, samples, prob.rel_l2(last["ours"], last["peer"]), os.getloadavg()[0]
    )


def float64_check(n: int, batch: int, forcing: str, steps: int) -> tuple:
    """Ours against the peer in float64, with the peer's 2/3 filter and with our mask.

    Returns ``(n, forcing, modes where the filters differ, dt, rel. L2 with the peer's
    filter, rel. L2 with our mask)``.
    """
    p64 = Problem(n, batch, forcing, torch.float64)
    with torch.no_grad():
        ours = p64.run_ours(steps)
        peer_own = p64.run_peer(p64.peer(), steps)
        peer_our_mask = p64.run_peer(p64.peer(our_mask=True), steps)
    return (
        n,
        forcing,
        _masks_differ(p64),
        p64.dt,
        p64.rel_l2(ours, peer_own),
        p64.rel_l2(ours, peer_our_mask),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed sample")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed samples")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--forcing", nargs="+", choices=["none", "fno"], default=["none", "fno"])
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the process (all threads), which other "
        "processes' load hardly changes -- a work measure, best with --threads 1",
    )
    parser.add_argument(
        "--no-float64-check", action="store_true", help="skip the float64 agreement runs"
    )
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--batch, --steps, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    argv = ["python", "benchmarks/navier_stokes.py", *sys.argv[1:]]
    command = " ".join(shlex.quote(a) for a in argv)
    load_start = os.getloadavg()[0]
    wall = time.perf_counter()

    speed_rows: list[SpeedRow] = []
    check_rows: list[tuple] = []
    for n in args.sizes:
        floor = fft_floor(n, args.batch, torch.float32)
        for forcing in args.forcing:
            prob = Problem(n, args.batch, forcing, torch.float32)
            clock = CLOCKS[args.clock]
            speed_rows.append(time_case(prob, floor, args.steps, args.repeats, clock))
            if not args.no_float64_check:
                check_rows.append(float64_check(n, args.batch, forcing, args.steps))
            print(f"  done N={n} forcing={forcing}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - wall

    unit = "ms/step" if args.clock == "wall" else "CPU ms/step"
    print("## Navier–Stokes (pseudo-spectral, RK4–CN): ours vs torch-cfd vs FFT floor\n")
    print(
        f"{datetime.date.today()}, {platform.machine()} CPU, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, torch-cfd {_peer_version()}, {args.threads} thread(s), "
        f"{args.clock} clock, batch {args.batch}, float32, {args.steps} steps per sample, "
        f"median of {args.repeats} interleaved samples; 1-min load average {load_start:.2f} "
        f"at start (per row at its end in the last column); {wall:.0f} s in all.\n"
    )
    print(
        f"| N | forcing | ours {unit} | torch-cfd {unit} | ours steps/s | torch-cfd steps/s "
        "| speed-up torch-cfd / ours | paired range | speed-up of best samples "
        f"| FFT floor {unit} | ours / floor | torch-cfd / floor | ours / floor, best samples "
        "| rel. L2 ours vs torch-cfd (f32) | load |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in speed_rows:
        o, p, f = row.median("ours"), row.median("peer"), row.median("floor")
        paired = row.paired()
        print(
            f"| {row.n} | {row.forcing} | {o * 1e3:.1f} | {p * 1e3:.1f} "
            f"| {1 / o:.1f} | {1 / p:.1f} "
            f"| {p / o:.2f}x | {min(paired):.2f}–{max(paired):.2f} "
            f"| {row.best('peer') / row.best('ours'):.2f}x | {f * 1e3:.1f} | {o / f:.2f} "
            f"| {p / f:.2f} | {row.best('ours') / row.best('floor'):.2f} "
            f"| {row.rel_l2:.1e} | {row.load:.1f} |"
        )
    print(
        "\nGoals: speed-up >= 2x at 256 and 512; ours / floor <= 2; the same answer to round-off."
    )
    if check_rows:
        print(
            f"\nfloat64 agreement after {args.steps} steps (rel. L2 of the final vorticity, "
            "ours vs torch-cfd):\n"
        )
        print(
            "| N | forcing | dt | modes where the 2/3 filters differ | peer's own filter "
            "| peer with our mask |"
        )
        print("|---:|---|---:|---:|---:|---:|")
        for n, forcing, diff, dt, e_own, e_ours in check_rows:
            print(f"| {n} | {forcing} | {dt:.3g} | {diff} | {e_own:.1e} | {e_ours:.1e} |")
    print(f"\nCommand: `{command}`")


def _peer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-cfd")
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
