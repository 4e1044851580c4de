r"""Gaunt tensor products: our exact paths against e3nn's ``o3.TensorProduct`` computing the same product.

Ours (:mod:`sciml.operators.gaunt`), each timed on its own:

* ``dense`` and ``separable``: the sphere-grid path
  (:class:`SphereGridGauntProduct`) with each of its two transforms;
* ``fourier``: the paper's 2D-Fourier path (:class:`FourierGauntProduct`);
* ``default``: :class:`GauntTensorProduct` with ``method="auto"`` (today the grid
  path, dense transform up to degree ``dense_max_degree()`` and separable above).

Peer: ``e3nn.o3.TensorProduct`` from ``Irreps.spherical_harmonics(L1)`` x
``Irreps.spherical_harmonics(L2)`` to ``Irreps.spherical_harmonics(Lout)``
(1 channel, ``1x0e+1x1o+1x2e+...``) over every path with :math:`l_1 + l_2 + l_3`
even inside the triangle (exactly the parity-allowed ones), mode ``"uuu"`` without
weights, ``irrep_normalization="none"``, ``path_normalization="none"`` and
``path_weight`` :math:`c^2`. e3nn multiplies a path by the square root of its
normalisation constant, so each path is :math:`c \cdot` ``wigner_3j``, with
:math:`c = \sqrt{(2l_1+1)(2l_2+1)(2l_3+1)/4\pi}\,|(l_1 l_2 l_3; 0 0 0)|`: the
Gaunt coefficient. The program first checks, in float64, that the peer and every
path of ours agree to round-off; a peer computing something else would be worthless.

Same process, same inputs (standard normal coefficients, seed 0), float32,
:math:`L_1 = L_2 = L_\text{out} = L`, one channel, inputs ``(B, (L+1)**2)``:

* ``fwd``: the product under ``torch.no_grad()``;
* ``fwd+bwd``: the product of inputs requiring grad, then ``backward`` of a fixed
  random cotangent (gradients set to ``None`` between calls).

Each contender is warmed up (e3nn's TorchScript profiling executor needs two to
three calls per input signature, the first ones taking seconds), then the
contenders are timed in rotating order within each repeat; tables give medians,
ratios of medians and the range of per-repeat (paired) ratios. e3nn is skipped
above ``--e3nn-lmax`` and where its last warm-up call took longer than ``--max-seconds``
(noted in the table).

Also printed: the log-log slope of time against L over ``--fit`` (default 8-14),
per path; the memory each contender keeps for backward; and :math:`\nu`-fold
products (:math:`\nu` = 2..4) -- one :math:`\nu`-input product of ours (one
transform per factor, one projection, nothing truncated in between) against
chains of :math:`\nu - 1` e3nn products, both truncated at L after each step (what
:class:`~sciml.operators.gaunt.CGChannelProduct` does: a cheaper, *different*
result) and exact (the intermediate after k factors kept up to degree
:math:`\min(kL, (\nu - k)L + L)`, equal to ours).

    python benchmarks/gaunt.py [--lmax 2 4 6 8 10 12 14] [--batch 1024 4096]
        [--repeats 5] [--threads 2] [--clock wall] [--e3nn-lmax 12] [--max-seconds 8]
        [--many-body-lmax 4 6] [--quick]

On the shared 2-core machine wall-clock samples depend on the other processes;
``--threads 1 --clock cpu`` (CPU time of this process) measures the work instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from sciml.operators.gaunt import (
    FourierGauntProduct,
    GauntTensorProduct,
    SphereGridGauntProduct,
    wigner_3j_zero_m,
)

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
OURS = ("dense", "separable", "fourier", "default")
MODES = ("fwd", "fwd+bwd")


def _e3nn():
    try:
        import e3nn
        from e3nn import o3
    except ImportError as err:  # declared by the project; say how to get it if absent
        raise SystemExit(f"this benchmark needs the peer e3nn ({err}): `.venv/bin/pip install e3nn`") from err
    return e3nn, o3


def gaunt_path_weight(l1: int, l2: int, l3: int) -> float:
    r""":math:`c^2`, e3nn's ``path_weight`` that makes its path ``(l1, l2 -> l3)`` the Gaunt coefficient."""
    return (2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi) * wigner_3j_zero_m(l1, l2, l3) ** 2


def e3nn_gaunt(lmax1: int, lmax2: int, lmax_out: int) -> torch.nn.Module:
    """e3nn ``o3.TensorProduct`` over the even paths with Gaunt path weights (see the module docstring)."""
    _, o3 = _e3nn()
    instructions = [
        (a, b, k, "uuu", False, gaunt_path_weight(a, b, k))
        for a in range(lmax1 + 1)
        for b in range(lmax2 + 1)
        for k in range(abs(a - b), min(a + b, lmax_out) + 1, 2)
    ]
    return o3.TensorProduct(
        o3.Irreps.spherical_harmonics(lmax1),
        o3.Irreps.spherical_harmonics(lmax2),
        o3.Irreps.spherical_harmonics(lmax_out),
        instructions,
        irrep_normalization="none",
        path_normalization="none",
    )


class E3nnChain(torch.nn.Module):
    r""":math:`\nu`-fold product as a chain of :math:`\nu - 1` e3nn Gaunt products.

    ``exact``: the intermediate after k factors keeps degrees up to
    :math:`\min(\sum_{i \le k} L_i,\ \sum_{i > k} L_i + L_\text{out})` (all that reach
    the output), so the chain equals the :math:`\nu`-input product; otherwise each
    step is truncated at :math:`L_\text{out}`.
    """

    def __init__(self, degrees: Sequence[int], lmax_out: int, exact: bool) -> None:
        super().__init__()
        steps, acc = [], degrees[0]
        for k in range(1, len(degrees)):
            last = k == len(degrees) - 1
            out = lmax_out if last or not exact else min(acc + degrees[k], sum(degrees[k + 1 :]) + lmax_out)
            steps.append(e3nn_gaunt(acc, degrees[k], out))
            acc = out
        self.steps = torch.nn.ModuleList(steps)

    def forward(self, *xs: Tensor) -> Tensor:
        z = xs[0]
        for tp, x in zip(self.steps, xs[1:]):
            z = tp(z, x)
        return z


def our_products(degrees: Sequence[int], lmax_out: int) -> dict[str, torch.nn.Module]:
    """Every path of ours for a ``len(degrees)``-input product; ``default`` only for two inputs."""
    paths = {
        "dense": SphereGridGauntProduct(degrees, lmax_out, transform="dense"),
        "separable": SphereGridGauntProduct(degrees, lmax_out, transform="separable"),
        "fourier": FourierGauntProduct(degrees, lmax_out),
    }
    if len(degrees) == 2:
        paths["default"] = GauntTensorProduct(*degrees, lmax_out)
    return paths


def default_name(lmax: int) -> str:
    """Which of our paths ``GauntTensorProduct(L, L, L)`` runs."""
    tp = GauntTensorProduct(lmax, lmax, lmax)
    return tp.path.transform if tp.method == "grid" else tp.method


def inputs(degrees: Sequence[int], batch: int, dtype: torch.dtype, seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, (l + 1) ** 2, generator=gen, dtype=dtype) for l in degrees]


def max_rel_diff(a: Tensor, b: Tensor) -> float:
    """``max|a - b| / max|b|``."""
    return float((a - b).abs().max() / b.abs().max())


def float64_check(lmaxes: Sequence[int], batch: int = 64) -> list[tuple[str, int, dict[str, float]]]:
    """Two-input (``L x L -> L``) and three-/four-input products, every path of ours against e3nn, float64."""
    rows = []
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for lmax in lmaxes:
            for nu in (2, 3, 4):
                degrees = (lmax,) * nu
                xs = inputs(degrees, batch, torch.float64, seed=1)
                peer = E3nnChain(degrees, lmax, exact=True)
                with torch.no_grad():
                    ref = peer(*xs)
                    errors = {name: max_rel_diff(p(*xs), ref) for name, p in our_products(degrees, lmax).items()}
                    if nu > 2:
                        errors["e3nn truncated"] = max_rel_diff(E3nnChain(degrees, lmax, exact=False)(*xs), ref)
                rows.append((f"ν={nu}", lmax, errors))
    finally:
        torch.set_default_dtype(before)
    return rows


@dataclasses.dataclass
class Case:
    """Samples of one (L or ν, batch, mode): seconds per call per contender."""

    key: tuple
    samples: dict[str, list[float]]
    skipped: dict[str, str]  # contender -> why
    rel_diff: float  # float32, default path vs e3nn (nan when e3nn skipped)
    load: float

    def median(self, name: str) -> float:
        s = self.samples.get(name)
        return statistics.median(s) if s else math.nan

    def paired(self, num: str, den: str) -> tuple[float, float]:
        r = [a / b for a, b in zip(self.samples.get(num, []), self.samples.get(den, []))]
        return (min(r), max(r)) if r else (math.nan, math.nan)


def make_call(module: torch.nn.Module, xs: Sequence[Tensor], mode: str) -> Callable[[], Tensor]:
    if mode == "fwd":
        def call() -> Tensor:
            with torch.no_grad():
                return module(*xs)
        return call
    leaves = [x.detach().clone().requires_grad_(True) for x in xs]
    with torch.no_grad():
        shape = module(*xs).shape
    cotangent = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=xs[0].dtype)

    def call() -> Tensor:
        for x in leaves:
            x.grad = None
        z = module(*leaves)
        z.backward(cotangent)
        return z.detach()
    return call


def time_case(
    key: tuple,
    ours: dict[str, torch.nn.Module],
    peers: dict[str, torch.nn.Module],
    xs: Sequence[Tensor],
    mode: str,
    repeats: int,
    clock: Callable[[], float],
    max_seconds: float,
) -> Case:
    """Warm up, then time the contenders in rotating order, ``repeats`` times."""
    calls = {name: make_call(m, xs, mode) for name, m in {**ours, **peers}.items()}
    skipped: dict[str, str] = {}
    last: dict[str, Tensor] = {}
    for name, call in calls.items():
        warm = 3 if name in peers else 2
        for w in range(warm):
            start = clock()
            last[name] = call()
            seconds = clock() - start
            if name in peers and w == warm - 1 and seconds > max_seconds:  # earlier calls compile
                skipped[name] = f"> {max_seconds:g} s ({seconds:.1f} s last warm-up call)"
    names = [n for n in calls if n not in skipped]
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = clock()
            last[name] = calls[name]()
            samples[name].append(clock() - start)
    peer = next(iter(peers), None)
    ref = "default" if "default" in last else "dense"
    rel = max_rel_diff(last[ref], last[peer]) if peer and peer in samples else math.nan
    return Case(key, samples, skipped, rel, os.getloadavg()[0])


def saved_bytes(module: torch.nn.Module, xs: Sequence[Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward.

    Counted by ``torch.autograd.graph.saved_tensors_hooks``; storages of the inputs
    (and of views of them) are excluded -- they exist anyway -- constants saved by
    the ops (module buffers) are included once. This is the activation memory a
    training step holds per product between forward and backward, not the transient
    peak inside the call (CPU torch keeps no allocator statistics).
    """
    leaves = [x.detach().clone().requires_grad_(True) for x in xs]
    skip = {x.untyped_storage().data_ptr() for x in leaves}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = module(*leaves)
    z.sum().backward()
    return sum(seen.values())


def fit_slope(ls: Sequence[int], ts: Sequence[float]) -> float:
    """Least-squares slope of log t against log L."""
    ok = [(l, t) for l, t in zip(ls, ts) if math.isfinite(t)]
    if len(ok) < 2:
        return math.nan
    return float(np.polyfit(np.log([l for l, _ in ok]), np.log([t for _, t in ok]), 1)[0])


def _ms(t: float) -> str:
    return "—" if not math.isfinite(t) else f"{t * 1e3:.3g}" if t < 0.1 else f"{t * 1e3:.0f}"


def _ratio(a: float, b: float) -> str:
    return "—" if not (math.isfinite(a) and math.isfinite(b)) else f"{a / b:.1f}x"


def _range(lo_hi: tuple[float, float]) -> str:
    lo, hi = lo_hi
    return "—" if not math.isfinite(lo) else f"{lo:.1f}–{hi:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12, 14])
    parser.add_argument("--batch", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed samples")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the process (all threads), which other "
        "processes' load hardly changes -- a work measure, best with --threads 1",
    )
    parser.add_argument("--e3nn-lmax", type=int, default=12, help="no e3nn product above this L")
    parser.add_argument(
        "--max-seconds", type=float, default=8.0,
        help="skip e3nn where its last warm-up call took longer"
    )
    parser.add_argument("--fit", type=int, nargs=2, default=[8, 14], metavar=("LO", "HI"),
                        help="L range of the fitted cost exponents")
    parser.add_argument("--many-body-lmax", type=int, nargs="*", default=[4, 6],
                        help="L of the ν = 2..4 products (batch: the first --batch)")
    parser.add_argument("--check-lmax", type=int, nargs="+", default=[2, 3, 4],
                        help="L of the float64 agreement check")
    parser.add_argument("--quick", action="store_true", help="smoke run: L = 2 4, batch 64, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.lmax, args.batch, args.repeats, args.many_body_lmax, args.check_lmax = [2, 4], [64], 2, [2], [2]
    if args.repeats < 1 or args.threads < 1 or min(args.batch) < 1 or min(args.lmax) < 0:
        parser.error("--repeats, --threads and --batch must be >= 1, --lmax >= 0")
    torch.set_num_threads(args.threads)
    e3nn, _ = _e3nn()
    argv = ["python", "benchmarks/gaunt.py", *sys.argv[1:]]
    command = " ".join(shlex.quote(a) for a in argv)
    clock = CLOCKS[args.clock]
    load_start = os.getloadavg()[0]
    wall = time.perf_counter()

    checks = float64_check(args.check_lmax)
    worst = max(max(e.get(n, 0.0) for n in OURS) for _, _, e in checks)
    print("  float64 check done", file=sys.stderr, flush=True)

    cases: list[Case] = []
    memory: list[tuple[int, dict[str, int]]] = []
    for lmax in args.lmax:
        ours = our_products((lmax, lmax), lmax)
        peers = {"e3nn": e3nn_gaunt(lmax, lmax, lmax)} if lmax <= args.e3nn_lmax else {}
        for batch in args.batch:
            xs = inputs((lmax, lmax), batch, torch.float32)
            for mode in MODES:
                case = time_case((lmax, batch, mode), ours, peers, xs, mode, args.repeats, clock,
                                 args.max_seconds)
                if not peers:
                    case.skipped["e3nn"] = f"L > --e3nn-lmax {args.e3nn_lmax}"
                cases.append(case)
                print(f"  done L={lmax} batch={batch} {mode}", file=sys.stderr, flush=True)
        xs = inputs((lmax, lmax), args.batch[0], torch.float32)
        memory.append((lmax, {n: saved_bytes(m, xs) for n, m in {**ours, **peers}.items()}))

    many: list[Case] = []
    for lmax in args.many_body_lmax:
        for nu in (2, 3, 4):
            degrees = (lmax,) * nu
            ours = our_products(degrees, lmax)
            ours.pop("default", None)
            peers = {"e3nn exact": E3nnChain(degrees, lmax, exact=True),
                     "e3nn truncated": E3nnChain(degrees, lmax, exact=False)}
            xs = inputs(degrees, args.batch[0], torch.float32)
            many.append(time_case((lmax, nu), ours, peers, xs, "fwd+bwd", args.repeats, clock, args.max_seconds))
            print(f"  done many-body L={lmax} ν={nu}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - wall

    unit = "ms" if args.clock == "wall" else "CPU ms"
    print("## Gaunt tensor products: ours vs e3nn `o3.TensorProduct` (same product)\n")
    print(
        f"{datetime.date.today()}, {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"e3nn {e3nn.__version__}, {args.threads} thread(s), {args.clock} clock, float32, 1 channel, "
        f"L1 = L2 = Lout = L, median of {args.repeats} interleaved samples per call; 1-min load average "
        f"{load_start:.2f} at start (per row at its end in the last column); {wall:.0f} s in all.\n"
    )
    print(f"float64 agreement with the e3nn peer (max |ours - e3nn| / max |e3nn|, batch 64; ν > 2: the exact "
          f"e3nn chain), worst of our paths: {worst:.1e}\n")
    names = [*OURS, "e3nn truncated"]
    print("| product | L | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for label, lmax, errors in checks:
        print(f"| {label} | {lmax} | " + " | ".join(f"{errors[n]:.1e}" if n in errors else "—" for n in names) + " |")

    print(f"\n### Time per call ({unit}) and speed-up e3nn / ours\n")
    print(f"| L | batch | pass | dense | separable | fourier | default (path) | e3nn | e3nn/dense | e3nn/separable "
          "| e3nn/fourier | e3nn/default | paired range e3nn/default | f32 rel. diff default vs e3nn | load |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        lmax, batch, mode = c.key
        t = {n: c.median(n) for n in (*OURS, "e3nn")}
        peer = _ms(t["e3nn"]) if "e3nn" not in c.skipped else f"skipped: {c.skipped['e3nn']}"
        print(
            f"| {lmax} | {batch} | {mode} | {_ms(t['dense'])} | {_ms(t['separable'])} | {_ms(t['fourier'])} "
            f"| {_ms(t['default'])} ({default_name(lmax)}) | {peer} "
            + " ".join(f"| {_ratio(t['e3nn'], t[n])}" for n in OURS)
            + f" | {_range(c.paired('e3nn', 'default'))} | {c.rel_diff:.1e} | {c.load:.1f} |"
        )

    lo, hi = args.fit
    print(f"\n### Fitted cost exponents: slope of log(time) vs log(L) over L = {lo}–{hi}\n")
    print("| batch | pass | " + " | ".join((*OURS, "e3nn")) + " |")
    print("|---:|---|" + "---:|" * (len(OURS) + 1))
    for batch in args.batch:
        for mode in MODES:
            rows = [c for c in cases if c.key[1] == batch and c.key[2] == mode and lo <= c.key[0] <= hi]
            cells = []
            for n in (*OURS, "e3nn"):
                pts = [(c.key[0], c.median(n)) for c in rows if math.isfinite(c.median(n))]
                span = f" (L {pts[0][0]}–{pts[-1][0]})" if n == "e3nn" and pts else ""
                cells.append(f"{fit_slope(*zip(*pts)):.2f}{span}" if len(pts) >= 2 else "—")
            print(f"| {batch} | {mode} | " + " | ".join(cells) + " |")

    print(f"\n### Memory saved for backward per product, batch {args.batch[0]} (KiB)\n")
    print("Distinct storages packed by `torch.autograd.graph.saved_tensors_hooks` during one forward, "
          "inputs excluded (activation memory held until backward, not the transient peak).\n")
    print("| L | " + " | ".join((*OURS, "e3nn")) + " | default / e3nn |")
    print("|---:|" + "---:|" * (len(OURS) + 2))
    for lmax, b in memory:
        cells = [f"{b[n] / 1024:.0f}" if n in b else "—" for n in (*OURS, "e3nn")]
        ratio = f"{b['default'] / b['e3nn']:.1f}" if b.get("e3nn") else "—"
        print(f"| {lmax} | " + " | ".join(cells) + f" | {ratio} |")

    if many:
        print(f"\n### ν-fold products, batch {args.batch[0]}, fwd+bwd ({unit}); e3nn: chains of ν − 1 products\n")
        print("| L | ν | dense | separable | fourier | e3nn exact | e3nn truncated at L | e3nn exact / best ours "
              "| e3nn truncated / best ours | f32 rel. diff dense vs e3nn exact | load |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in many:
            lmax, nu = c.key
            t = {n: c.median(n) for n in ("dense", "separable", "fourier", "e3nn exact", "e3nn truncated")}
            best = min(t["dense"], t["separable"], t["fourier"])
            peers = [_ms(t[n]) if n not in c.skipped else f"skipped: {c.skipped[n]}"
                     for n in ("e3nn exact", "e3nn truncated")]
            print(f"| {lmax} | {nu} | {_ms(t['dense'])} | {_ms(t['separable'])} | {_ms(t['fourier'])} "
                  f"| {peers[0]} | {peers[1]} | {_ratio(t['e3nn exact'], best)} "
                  f"| {_ratio(t['e3nn truncated'], best)} | {c.rel_diff:.1e} | {c.load:.1f} |")

    print("\n### Goals (fwd+bwd)\n")
    for lmax, batch, need in ((6, 4096, 12.0), (10, 1024, 30.0), (12, 1024, 30.0)):
        c = next((c for c in cases if c.key == (lmax, batch, "fwd+bwd")), None)
        if c is None or not math.isfinite(c.median("e3nn")):
            print(f"- default ≥ {need:g}x e3nn at L = {lmax}, batch {batch}: not measured in this run")
            continue
        r = c.median("e3nn") / c.median("default")
        print(f"- default ≥ {need:g}x e3nn at L = {lmax}, batch {batch}: {r:.1f}x, "
              f"{'met' if r >= need else 'NOT met'} (paired range {_range(c.paired('e3nn', 'default'))})")
    for batch in args.batch:
        for mode in MODES:
            rows = [c for c in cases if c.key[1:] == (batch, mode)]
            wins = [c.key[0] for c in rows if c.median("fourier") < c.median("default")]
            first = f"from L = {wins[0]}" if wins else f"not up to L = {max(args.lmax)}"
            best = min(rows, key=lambda c: c.median("fourier") / c.median("default"))
            print(f"- Fourier path faster than the default grid path, batch {batch}, {mode}: {first} "
                  f"(lowest fourier / default {best.median('fourier') / best.median('default'):.2f} at "
                  f"L = {best.key[0]})")
    print(f"\nCommand: `{command}`")


if __name__ == "__main__":
    main()
