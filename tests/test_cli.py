"""The command line as a user meets it: exit codes, messages, MPI behaviour."""

from __future__ import annotations

import json

import pytest

from support import CASES, run_sciml

BAD = "kind: navier_stokes\ngrid:\n  n: -4\ninitial_condition:\n  type: mcwilliams\ntime:\n  n_frames: 1\n  frame_dt: 0.1\n"


def test_validate_ok():
    out = run_sciml("validate", str(CASES / "default.yaml"))
    assert out.returncode == 0, out.stderr
    assert "valid 'navier_stokes' case" in out.stdout


def test_invalid_input_exit_2_one_line_no_traceback(tmp_path):
    case = tmp_path / "bad.yaml"
    case.write_text(BAD)
    for cmd in ("validate", "run"):
        out = run_sciml(cmd, str(case), "--set", "time.ctl=0.3")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        lines = out.stderr.strip().splitlines()
        assert f"{case}:3: grid.n: must be at least 8 (got -4)" in lines
        assert "--set time.ctl=0.3: no key 'ctl' in 'time' (did you mean 'cfl'?)" in lines
    assert not (tmp_path / "runs").exists()


def test_a_gpu_case_on_a_machine_without_one_is_refused_before_work(tmp_path):
    """`validate` accepts it (login nodes have no GPU); `run` exits 2 naming the line, no traceback."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    case = tmp_path / "gpu.yaml"
    case.write_text((CASES / "default.yaml").read_text() + "device: cuda\n")
    line = len(case.read_text().splitlines())
    assert run_sciml("validate", str(case)).returncode == 0
    out = run_sciml("run", str(case), "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith(f"{case}:{line}: device: cuda was asked for"), out.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_usage_error_exit_2():
    out = run_sciml("run")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_resume_of_non_run_folder_is_invalid_input(tmp_path):
    out = run_sciml("resume", str(tmp_path))
    assert out.returncode == 2 and "not a run folder" in out.stderr


def test_run_refuses_foreign_nonempty_out_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    out = run_sciml("run", str(CASES / "default.yaml"), "--out", str(tmp_path))
    assert out.returncode == 2 and "not a sciml run folder" in out.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_list_and_doctor():
    out = run_sciml("list")
    assert out.returncode == 0 and "navier_stokes" in out.stdout and "default.yaml" in out.stdout
    out = run_sciml("doctor")
    assert out.returncode == 0 and "torch" in out.stdout and "MPI launcher" in out.stdout


@pytest.mark.mpi
def test_invalid_input_under_mpi_only_rank0_prints_all_exit_2(tmp_path):
    case = tmp_path / "bad.yaml"
    case.write_text(BAD)
    out = run_sciml("run", str(case), ranks=2, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("grid.n: must be at least 8") == 1, out.stderr


def test_a_terminal_gets_a_progress_bar_a_pipe_gets_plain_lines(tmp_path):
    """Long loops draw a bar when attached to a terminal (a pseudo-terminal here), log lines otherwise."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from support import child_env, sciml_cmd

    case = tmp_path / "case.yaml"
    case.write_text("kind: navier_stokes\ngrid: {n: 16}\ninitial_condition: {type: mcwilliams}\n"
                    "time: {n_frames: 20, frame_dt: 0.01}\noutput: {plots: false, paraview_trajectories: 0}\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # a 100-column terminal
    env = child_env(TERM="xterm")
    proc = subprocess.Popen(sciml_cmd("run", str(case), "--out", str(tmp_path / "tty")), stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    on_tty = b"".join(chunks).decode(errors="replace")
    assert "frames: 100%|" in on_tty and "20/20" in on_tty, on_tty
    piped = run_sciml("run", str(case), "--out", str(tmp_path / "pipe"))
    assert piped.returncode == 0 and "%|" not in piped.stdout + piped.stderr
    assert "frames: 20/20 (" in piped.stdout


NS = """\
kind: navier_stokes
grid: {n: 16}
initial_condition: {type: gaussian_random_field}
time: {n_frames: 6, frame_dt: 0.1}
"""


def test_run_refuses_a_folder_whose_config_yaml_is_not_a_runs(tmp_path):
    """A config.yaml alone (another tool's) does not make a sciml run folder: nothing in it is removed."""
    case, out = tmp_path / "ns.yaml", tmp_path / "project"
    case.write_text(NS)
    (out / "plots").mkdir(parents=True)
    (out / "config.yaml").write_text("lr: 0.1\n")
    (out / "plots" / "figure.png").write_text("keep me")
    res = run_sciml("run", str(case), "--out", str(out))
    assert res.returncode == 2 and "not a sciml run folder" in res.stderr, res.stderr
    assert (out / "plots" / "figure.png").read_text() == "keep me"
    assert (out / "config.yaml").read_text() == "lr: 0.1\n"


def test_a_fresh_run_over_an_earlier_one_replaces_its_outputs_and_keeps_other_files(tmp_path):
    case, out = tmp_path / "ns.yaml", tmp_path / "run"
    case.write_text(NS)
    assert run_sciml("run", str(case), "--out", str(out), "--set", "seed=7").returncode == 0
    assert (out / "overrides.txt").read_text() == "seed=7\n"
    (out / "notes.txt").write_text("mine")
    assert run_sciml("run", str(case), "--out", str(out)).returncode == 0
    assert not (out / "overrides.txt").exists()  # it would describe the earlier run
    assert (out / "notes.txt").read_text() == "mine"


def test_an_input_of_the_case_where_the_run_writes_is_refused_and_kept(tmp_path):
    """Reading the dataset of an earlier run while writing a new run into the same folder would remove it
    (a fresh run clears the earlier run's results first)."""
    case, out = tmp_path / "ns.yaml", tmp_path / "ds"
    case.write_text(NS)
    assert run_sciml("run", str(case), "--out", str(out)).returncode == 0
    data = out / "trajectories.h5"
    before = data.read_bytes()
    sfno = tmp_path / "sfno.yaml"
    sfno.write_text(f"kind: sfno\nn_test: 1\ndata:\n  train: {{path: {data}}}\n  test: {{path: {data}}}\n"
                    "window: {frame_dt: 0.1, n_in: 2, n_out: 2}\ntraining: {resolution: 16}\n"
                    "model: {modes: [2, 4, 4], width: 4, n_layers: 1}\nfinetune: {n_trajectories: 1, order: 2}\n")
    assert run_sciml("validate", str(sfno)).returncode == 0
    res = run_sciml("run", str(sfno), "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{sfno}:4: data.train.path: {data} lies where the run in {out} writes its results" in res.stderr
    assert data.read_bytes() == before


def test_an_unwritable_out_is_invalid_input(tmp_path):
    case = tmp_path / "ns.yaml"
    case.write_text(NS)
    (tmp_path / "afile").write_text("")
    res = run_sciml("run", str(case), "--out", str(tmp_path / "afile" / "sub"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"--out {tmp_path / 'afile' / 'sub'}: cannot write there (Not a directory)"


def test_a_second_process_in_the_same_run_folder_is_refused(tmp_path):
    """The folder is locked while a run or resume works in it (the lock dies with the process)."""
    import fcntl

    case, out = tmp_path / "ns.yaml", tmp_path / "run"
    case.write_text(NS)
    assert run_sciml("run", str(case), "--out", str(out)).returncode == 0
    before = (out / "metrics.json").read_text()
    with open(out / ".sciml.lock", "a") as held:  # as another sciml process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for args in (("run", str(case), "--out", str(out), "--set", "seed=5"), ("resume", str(out))):
            res = run_sciml(*args)
            assert res.returncode == 2 and "another sciml process is running in this folder" in res.stderr
    assert (out / "metrics.json").read_text() == before
    assert run_sciml("resume", str(out)).returncode == 0  # released


def test_sigterm_ends_the_run_like_an_interrupt_and_resume_finishes_it(tmp_path):
    """A batch system's time limit (SIGTERM): exit 143, the provenance says so, the checkpoint resumes."""
    import signal
    import subprocess
    import time

    from support import child_env, sciml_cmd

    case, out = tmp_path / "ns.yaml", tmp_path / "run"
    case.write_text(NS.replace("n: 16", "n: 128").replace("n_frames: 6", "n_frames: 4000"))
    proc = subprocess.Popen(sciml_cmd("run", str(case), "--out", str(out)), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "latest.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    assert json.loads((out / "provenance.json").read_text())["status"] == "terminated (SIGTERM)"
    assert "terminated (SIGTERM); the last checkpoint is intact" in (out / "log.txt").read_text()
    assert not (out / "metrics.json").exists()


def test_resume_from_another_directory_reuses_the_default_data_cache(tmp_path):
    """Generated datasets go to ./data of the directory a run starts in; a resume from elsewhere finds them
    there (recorded in provenance.json) instead of generating them again."""
    first, other = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    other.mkdir()
    case = tmp_path / "sfno.yaml"
    gen = ("{generate: {n_trajectories: 2, chunk_size: 2, grid: {n: 16}, initial_condition: "
           "{type: gaussian_random_field}, time: {n_frames: 5, frame_dt: 0.1}}}")
    case.write_text(f"kind: sfno\nn_test: 1\ndata:\n  train: {gen}\n  test: {gen}\n"
                    "window: {frame_dt: 0.1, n_in: 2, n_out: 2}\ntraining: {resolution: 16, epochs: 1}\n"
                    "model: {modes: [2, 4, 4], width: 4, n_layers: 1}\nbaseline: {enabled: false}\n"
                    "finetune: {n_trajectories: 1, order: 2, steps: 1}\n")
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), cwd=first, timeout=300)
    assert res.returncode == 0, res.stderr
    assert any((first / "data").glob("ns-*.h5"))
    res = run_sciml("resume", str(tmp_path / "run"), cwd=other, timeout=300)
    assert res.returncode == 0, res.stderr
    assert not (other / "data").exists()
    # the run folder on another machine: the recorded cache is not there, the default one is used
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())
    record["data_dir"] = str(tmp_path / "gone" / "data")
    (tmp_path / "run" / "provenance.json").write_text(json.dumps(record))
    res = run_sciml("resume", str(tmp_path / "run"), cwd=other, timeout=300)
    assert res.returncode == 0, res.stderr
    assert any((other / "data").glob("ns-*.h5"))


def test_resume_refuses_an_input_file_replaced_since_the_run_started(tmp_path):
    """A dataset swapped between a kill and a resume would silently mix two problems in one run; the same
    bytes restored (a new modification time) are accepted."""
    case = tmp_path / "ns.yaml"
    case.write_text(NS)
    for seed in (0, 1):
        res = run_sciml("run", str(case), "--out", str(tmp_path / f"ds{seed}"), "--set", f"seed={seed}")
        assert res.returncode == 0, res.stderr
    data, other = tmp_path / "ds0" / "trajectories.h5", tmp_path / "ds1" / "trajectories.h5"
    original = data.read_bytes()
    sfno = tmp_path / "sfno.yaml"
    sfno.write_text(f"kind: sfno\nn_test: 1\ndata:\n  train: {{path: {data}}}\n  test: {{path: {data}}}\n"
                    "window: {frame_dt: 0.1, n_in: 2, n_out: 2}\ntraining: {resolution: 16, epochs: 1}\n"
                    "model: {modes: [2, 4, 4], width: 4, n_layers: 1}\nbaseline: {enabled: false}\n"
                    "finetune: {n_trajectories: 1, order: 2, steps: 1}\n")
    out = tmp_path / "run"
    assert run_sciml("run", str(sfno), "--out", str(out)).returncode == 0
    assert (out / "checkpoints" / "latest.pt").is_file()
    data.write_bytes(other.read_bytes())
    res = run_sciml("resume", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"data.test.path: {data} changed since the run started" in res.stderr
    assert f"data.train.path: {data} changed since the run started" in res.stderr
    data.write_bytes(original)
    assert run_sciml("resume", str(out)).returncode == 0


def test_odd_case_and_out_arguments_get_a_message(tmp_path):
    """A folder or a device given as the case, an empty --out, a kind set by --set: named as given."""
    case = tmp_path / "ns.yaml"
    case.write_text(NS)
    for args, message in ((("validate", str(tmp_path)), f"{tmp_path}: a folder, not a case file"),
                          (("validate", "/dev/null"), "/dev/null: not a regular file"),
                          (("run", str(case), "--out", ""), "--out: expected a folder (got an empty path)"),
                          (("validate", str(case), "--set", "kind=nope"), "--set kind=nope: kind: unknown case kind "
                                                                          "'nope'")):
        res = run_sciml(*args)
        assert res.returncode == 2 and res.stderr.strip().startswith(message), (args, res.stderr)


@pytest.mark.mpi
def test_a_refused_out_under_mpi_is_one_message_from_rank_0(tmp_path):
    """Rank 0 alone judges the folder and tells the others (a refusal seen by one rank only used to leave
    the others waiting)."""
    case = tmp_path / "ns.yaml"
    case.write_text(NS)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep")
    res = run_sciml("run", str(case), "--out", str(tmp_path / "out"), ranks=2, timeout=120)
    assert res.returncode == 2 and res.stderr.count("not a sciml run folder") == 1, res.stderr


def _rank_pids(marker: str, rank: int) -> list[int]:
    """Processes whose command line holds ``marker`` and whose MPI rank is ``rank`` (Linux /proc)."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace") and \
                    f"OMPI_COMM_WORLD_RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.mpi
def test_sigterm_to_one_rank_ends_the_whole_job(tmp_path):
    """A batch system may signal the tasks, not the launcher: the rank that gets SIGTERM aborts the job
    (it used to return and leave the other rank waiting in a collective forever); the checkpoint stays."""
    import os
    import signal
    import subprocess
    import time

    from support import child_env, sciml_cmd

    case, out = tmp_path / "ns.yaml", tmp_path / "sigterm_one_rank"
    case.write_text(NS.replace("n: 16", "n: 64").replace("n_frames: 6", "n_frames: 4000"))
    proc = subprocess.Popen(sciml_cmd("run", str(case), "--out", str(out), ranks=2), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "latest.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = _rank_pids(str(out), 1)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "metrics.json").exists()
    import torch

    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["step"] > 0  # intact

