"""gunicorn.conf.py, which every gunicorn started in the project's directory reads."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@pytest.fixture
def switch_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_a_worker_hands_the_gil_between_its_threads_within_a_millisecond(switch_interval):
    config = runpy.run_path(str(CONFIG))
    sys.setswitchinterval(0.005)

    config["post_worker_init"](worker=None)

    assert sys.getswitchinterval() == pytest.approx(0.001)
