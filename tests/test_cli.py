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
