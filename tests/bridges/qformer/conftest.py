import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread avoids thread start-up and contention costing more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
