import pytest
import torch


@pytest.fixture
def one_thread():
    """The machine is shared: keep the test to one core. Not autouse: the loop and distillation
    tests ask for it with `pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
