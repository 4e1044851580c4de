"""Fixtures for the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tests run torch single-threaded: their tensors are small, and on a shared 2-core
    machine intra-op threads waiting on each other make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
