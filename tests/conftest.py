"""Shared fixtures.

The suite trains many small networks; compiling each would cost far more than it trains, so
``torch.compile`` is off here (torch's own ``TORCH_COMPILE_DISABLE``, inherited by the
subprocesses): those runs take the rest of the default path (channels-last, metrics on the
device). tests/test_speed.py runs the compiled path itself (it clears the variable).
"""
import os

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import pytest  # noqa: E402  (after the variable: torch reads it at import)
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tests on small tensors run on one thread: OpenMP overhead dominates them, and two threads
    on two shared cores stall (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
