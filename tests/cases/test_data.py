"""The data: block: sources validated, generated datasets cached by configuration hash."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sciml.cases.data import DataSource, generation_hash, read_trajectories, resolve_dataset
from sciml.parallel import SerialComm

GEN = {
    "n_trajectories": 3,
    "chunk_size": 2,
    "grid": {"n": 32, "length": 1.0},
    "physics": {"viscosity": 1e-3, "forcing": {"type": "fno"}},
    "initial_condition": {"type": "gaussian_random_field"},
    "time": {"n_frames": 3, "frame_dt": 0.1},
}


def source(tmp_path, **changes) -> DataSource:
    gen = {**GEN, **changes}
    return DataSource.model_validate({"generate": gen, "cache_dir": str(tmp_path / "cache")})


def test_exactly_one_source_and_existing_file(tmp_path):
    with pytest.raises(ValidationError, match="exactly one of 'path'"):
        DataSource.model_validate({})
    with pytest.raises(ValidationError, match="no such dataset file"):
        DataSource.model_validate({"path": "missing.h5"}, context={"base_dir": tmp_path})


def test_generate_then_reuse_cache(tmp_path):
    src = source(tmp_path)
    logs: list[str] = []
    path = resolve_dataset(src, SerialComm(), log=logs.append)
    assert path.is_file() and "generating" in logs[-1]
    mtime = path.stat().st_mtime_ns
    again = resolve_dataset(source(tmp_path), SerialComm(), log=logs.append)
    assert again == path and again.stat().st_mtime_ns == mtime and "reusing" in logs[-1]
    data = read_trajectories(path, dtype=torch.float64)
    assert tuple(data.vorticity.shape) == (3, 4, 32, 32)
    assert data.viscosity == 1e-3 and data.domain_length == 1.0
    assert np.allclose(data.time.numpy(), [0, 0.1, 0.2, 0.3])
    # a path source reads the same file
    assert resolve_dataset(DataSource.model_validate({"path": str(path)}), SerialComm()) == path


def test_hash_tracks_everything_that_changes_the_bits(tmp_path):
    base = source(tmp_path).generate
    assert generation_hash(base) != generation_hash(source(tmp_path, physics={"viscosity": 2e-3}).generate)
    assert generation_hash(base) != generation_hash(source(tmp_path, seed=1).generate)
    assert generation_hash(base) != generation_hash(source(tmp_path, chunk_size=1).generate)
    assert generation_hash(base) == generation_hash(source(tmp_path, output={"plots": False}).generate)
