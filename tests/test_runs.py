"""The run folder's checkpoints: a process killed while writing one leaves the previous checkpoint whole,
and resuming removes the killed write's temporary file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sciml.runs import Run

from support import child_env


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    Run(tmp_path).save_checkpoint({"x": 1}, step=1)
    killed = textwrap.dedent(f"""
        import os, signal
        from sciml.runs import atomic_write
        with atomic_write({str(tmp_path / "checkpoints" / "latest.pt")!r}) as fh:
            fh.write(b"half a checkpoint")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", killed], env=child_env(), capture_output=True, timeout=120)
    assert res.returncode == -9, res.stderr
    assert len(list((tmp_path / "checkpoints").glob(".latest.pt.*.tmp"))) == 1
    run = Run(tmp_path, resume=True)
    assert run.load_checkpoint()["state"] == {"x": 1}
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
