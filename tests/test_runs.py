"""The run folder's checkpoints: a process killed while writing one leaves the previous checkpoint whole,
and resuming removes the killed write's temporary file."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

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
    (tmp_path / "plots" / ".loss.png.0123456789ab.tmp").write_bytes(b"half a figure")  # killed while plotting
    run = Run(tmp_path, resume=True)
    assert run.load_checkpoint()["state"] == {"x": 1}
    assert not list((tmp_path / "checkpoints").glob(".*.tmp")) and not list((tmp_path / "plots").glob(".*.tmp"))


def test_provenance_keeps_the_wall_time_of_a_killed_process(tmp_path):
    """Checkpoints refresh provenance.json while running; a resumed run adds the earlier wall time."""
    first = Run(tmp_path)
    first.write_provenance(seed=1, kind="demo", status="running")
    time.sleep(0.25)
    first.save_checkpoint({"x": 1}, step=1)
    killed = json.loads((tmp_path / "provenance.json").read_text())  # all a SIGKILL would leave
    assert killed["status"] == "running" and "finished" not in killed
    assert killed["wall_time_s"] >= 0.25
    second = Run(tmp_path, resume=True)
    second.write_provenance(seed=1, kind="demo", status="running")
    time.sleep(0.1)
    second.write_provenance(seed=1, kind="demo", status="finished")
    done = json.loads((tmp_path / "provenance.json").read_text())
    assert done["previous"] == killed  # nested once, not re-nested by the second write
    assert done["status"] == "finished" and done["finished"] and done["resumed"]
    assert done["wall_time_s"] >= 0.1
    assert done["wall_time_total_s"] == pytest.approx(done["wall_time_s"] + killed["wall_time_s"], abs=2e-3)
    second.save_checkpoint({"x": 2}, step=2)  # after the end, checkpoints leave the record alone
    assert json.loads((tmp_path / "provenance.json").read_text()) == done


@dataclasses.dataclass
class _Record:
    step: int
    values: Any


def test_array_files_round_trip_and_read_torch_save_files(tmp_path):
    """``save_arrays`` keeps every array bit for bit (dtype, shape, strides' order, values) inside nested
    containers and dataclasses, and ``load_arrays`` also reads a file written by ``torch.save``."""
    import numpy as np
    import torch

    from sciml.runs import load_arrays, save_arrays

    rng = np.random.default_rng(0)
    obj = {"a": rng.standard_normal((7, 6, 5)), "f": np.asfortranarray(rng.standard_normal((4, 3))),
           "i": np.arange(9, dtype=np.int64)[::2], "list": [_Record(3, rng.standard_normal(4)), None, 2.5],
           "empty": np.zeros((0, 3))}
    save_arrays(tmp_path / "state.pt", obj)
    back = load_arrays(tmp_path / "state.pt")
    for key in ("a", "f", "i", "empty"):
        assert back[key].dtype == obj[key].dtype and back[key].shape == obj[key].shape
        assert np.array_equal(back[key], obj[key])
    assert back["f"].flags.f_contiguous and back["list"][0].step == 3
    assert np.array_equal(back["list"][0].values, obj["list"][0].values) and back["list"][1:] == [None, 2.5]
    back["a"][0, 0, 0] = 1.0  # writable
    torch.save({"x": obj["a"]}, tmp_path / "old.pt")
    assert np.array_equal(load_arrays(tmp_path / "old.pt")["x"], obj["a"])
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed


def test_atomic_writes_get_the_mode_open_gives_under_the_umask(tmp_path):
    """mkstemp makes 0600 files; results shared with a cluster group must follow the umask like open()."""
    atomic, plain = str(tmp_path / "atomic.txt"), str(tmp_path / "plain.txt")
    code = f"""
import os
os.umask(0o002)
from sciml.runs import atomic_write_text
atomic_write_text({atomic!r}, "x")
open({plain!r}, "w").close()
print(*(oct(os.stat(p).st_mode & 0o777) for p in ({atomic!r}, {plain!r})))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    atomic, plain = res.stdout.split()
    assert atomic == plain == "0o664"
