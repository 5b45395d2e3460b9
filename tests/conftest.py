"""Shared fixtures and markers: `slow` tests run only with FCAM_RUN_SLOW=1, `gpu` ones only with CUDA.

The `device` fixture runs a test on the CPU and, where CUDA is available, again on the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # One thread from the start, so that module- and session-scoped fixtures (computed before the
    # per-test fixture below) run like the tests that compare with them, bit for bit.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("FCAM_RUN_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: set FCAM_RUN_SLOW=1 to run")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _deterministic(request: pytest.FixtureRequest) -> Iterator[None]:
    """Seeded, and one intra-op thread: fastest for tiny models (two threads contend on 2 cores).

    Tests on larger models ask for more with ``@pytest.mark.threads(2)``; one thread is restored
    after them, so that module-scoped fixtures (set up before this fixture runs) always see one.
    """
    torch.manual_seed(0)
    marker = request.node.get_closest_marker("threads")
    wanted = marker.args[0] if marker else 1
    torch.set_num_threads(max(1, min(wanted, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(1)


#: Devices of the ``device`` fixture: CPU always, CUDA (marked ``gpu``) only where it exists, so a
#: CPU-only machine runs every ``device`` test exactly once, as before.
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.gpu)] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device a core test runs on: ``cpu``, then ``cuda`` when a CUDA device is present."""
    return torch.device(request.param)
