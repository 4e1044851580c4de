"""The rom_adaptive case end to end: run folder, metrics, ParaView pieces per rank, the
same ROM results on 1 and 2 MPI ranks (timings aside) to 1e-10, and the same metrics
after a kill in an HF run or in the adaptive online run and ``sciml resume``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support import run_sciml

TINY = """\
kind: rom_adaptive
mesh: {nx: 8, ny: 4, block_size: 4}
loading: {n_steps: 8, n_cycles: 1, ramp_time: 3.0}
rom: {indicator_tol: 0.02, monitor_points: 4, thermoelastic_levels: 2, ecm_batch: 4}
output: {plots: false, keep_checkpoints: true}
"""

TIMING = ("speedup_online_step", "speedup_online_total", "hf_s", "online_s", "online_parts_s", "offline_s",
          "offline_build_s", "world_size")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rom_case")
    case = tmp / "tiny.yaml"
    case.write_text(TINY)
    out = {}
    for ranks in (1, 2):
        folder = tmp / f"ranks{ranks}"
        res = run_sciml("run", str(case), "--out", str(folder), ranks=ranks, timeout=240)
        assert res.returncode == 0, res.stderr[-3000:]
        out[ranks] = folder
    return out


def test_run_folder_and_metrics(runs):
    folder = runs[1]
    for f in ("config.yaml", "metrics.json", "log.txt", "provenance.json", "fields.pvd"):
        assert (folder / f).is_file(), f
    m = json.loads((folder / "metrics.json").read_text())
    for key in ("max_rel_error_u", "max_rel_error_p", "max_rel_error_u_nonadaptive", "hf_steps_used", "n_steps",
                "n_modes", "n_ecm_points", "n_integration_points", "indicator_error_spearman",
                "speedup_online_step", "speedup_online_total", "offline_s", "world_size"):
        assert key in m, key
    assert m["n_steps"] == 8 and m["world_size"] == 1 and m["n_integration_points"] == 128
    assert 0 < m["hf_steps_used"] < m["n_steps"]
    assert m["max_rel_error_u_nonadaptive"] > 1e-2 > m["max_rel_error_u"]
    assert m["n_ecm_points_offline"] < m["n_integration_points"]  # (the tiny mesh saturates after updates)
    assert (folder / "fields.pvd").read_text().count("<DataSet") == 8


def test_two_ranks_give_the_same_rom(runs):
    a = json.loads((runs[1] / "metrics.json").read_text())
    b = json.loads((runs[2] / "metrics.json").read_text())
    assert b["world_size"] == 2
    for key, value in a.items():
        if key in TIMING:
            continue
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
        else:
            assert b[key] == value, key
    pieces = sorted(p.name for p in (runs[2] / "fields").glob("fields_0_*.vtu"))
    assert pieces == ["fields_0_0.vtu", "fields_0_1.vtu"]
    assert (runs[2] / "fields" / "fields_0.pvtu").is_file()


@pytest.mark.parametrize("stage", ["hf_reference", "online"])
def test_resume_after_a_kill_gives_the_same_metrics(runs, tmp_path, stage):
    """A kill after step 4 of the reference HF run or of the adaptive run (checkpoint steps:
    training 1..n, reference n+1..2n, offline ROM 2n+1, plain ROM 2n+2, online setup 2n+3,
    adaptive step k 2n+3+k): `sciml resume` from that checkpoint ends with the same metrics."""
    done = runs[1]
    n = json.loads((done / "metrics.json").read_text())["n_steps"]
    step = {"hf_reference": n + 4, "online": 2 * n + 3 + 4}[stage]
    folder = tmp_path / "killed"
    shutil.copytree(done, folder)
    shutil.copy(folder / "checkpoints" / f"step_{step:08d}.pt", folder / "checkpoints" / "latest.pt")
    (folder / "metrics.json").unlink()
    res = run_sciml("resume", str(folder), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed after step 4/8" in res.stdout
    a = json.loads((done / "metrics.json").read_text())
    b = json.loads((folder / "metrics.json").read_text())
    assert {k: v for k, v in b.items() if k not in TIMING} == {k: v for k, v in a.items() if k not in TIMING}


def test_invalid_key_is_reported_before_any_work(tmp_path):
    case = tmp_path / "bad.yaml"
    case.write_text(TINY.replace("ecm_batch: 4", "ecm_bach: 4"))
    res = run_sciml("validate", str(case))
    assert res.returncode == 2
    assert "rom.ecm_bach" in res.stderr


def test_hf_fields_are_written_once_not_into_every_checkpoint(runs):
    """Each HF step's fields go to their own file; the checkpoints during the HF runs do not grow."""
    ck = runs[1] / "checkpoints"
    for name in ("training", "reference"):
        assert len(list((ck / f"hf_{name}").glob("step_*.pt"))) == 8, name
    sizes = [(ck / f"step_{k:08d}.pt").stat().st_size for k in range(1, 17)]
    field_bytes = (ck / "hf_training" / "step_00001.pt").stat().st_size
    assert max(sizes) - min(sizes) < field_bytes / 4, (sizes, field_bytes)


def test_rom_state_is_written_at_revisions_only(runs):
    """Each rank writes its ROM state at the checkpoints where the ROM has changed (after the build, after
    the online setup, after each HF step's update), not into every checkpoint: the adaptive run's
    checkpoints stay small."""
    for ranks, folder in runs.items():
        ck = folder / "checkpoints"
        m = json.loads((folder / "metrics.json").read_text())
        dirs = sorted(p.name for p in ck.glob("rom_rank*"))
        assert dirs == [f"rom_rank{r:04d}" for r in range(ranks)]
        for d in dirs:
            revs = sorted((ck / d).glob("rev_*.pt"))
            # keep_checkpoints: none removed. Revisions: build 0, monitor points 1, enrichment 2, updates 3, ...
            want = [0] + list(range(2, 3 + m["hf_steps_used"]))
            assert [p.name for p in revs] == [f"rev_{k:04d}.pt" for k in want]
            assert len(list((ck / d).glob("hf_step_*.pt"))) == m["hf_steps_used"]
            # the bases of each revision that made new ones, once: build, enrichment, one per HF step
            assert len(list((ck / d).glob("bases_*.pt"))) == 2 + m["hf_steps_used"]
        n = m["n_steps"]
        online = [(ck / f"step_{2 * n + 3 + k:08d}.pt").stat().st_size for k in range(1, n + 1)]
        rev = min(p.stat().st_size for p in (ck / "rom_rank0000").glob("rev_*.pt"))
        assert max(online) < rev / 4, (online, rev)


def test_superseded_rom_states_are_removed_and_the_last_one_resumes(runs, tmp_path):
    """Without keep_checkpoints only the revision the latest checkpoint refers to stays; resuming
    from that checkpoint (after the last online step) gives the same metrics."""
    case = tmp_path / "tiny.yaml"
    case.write_text(TINY.replace("keep_checkpoints: true", "keep_checkpoints: false"))
    folder = tmp_path / "nokeep"
    res = run_sciml("run", str(case), "--out", str(folder), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((folder / "metrics.json").read_text())
    revs = [p.name for p in (folder / "checkpoints" / "rom_rank0000").glob("rev_*.pt")]
    assert revs == [f"rev_{2 + m['hf_steps_used']:04d}.pt"]
    (folder / "metrics.json").unlink()
    res = run_sciml("resume", str(folder), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed after step {m['n_steps']}/{m['n_steps']}" in res.stdout
    b = json.loads((folder / "metrics.json").read_text())
    a = json.loads((runs[1] / "metrics.json").read_text())
    assert {k: v for k, v in b.items() if k not in TIMING} == {k: v for k, v in a.items() if k not in TIMING}
