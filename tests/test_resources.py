"""Resource bounds: driver memory does not grow with the number of images, and
each Python worker stays under 1.5 GB (measured by bench/memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import DATA, ROOT, require


@pytest.mark.slow
def test_driver_memory_does_not_grow_with_the_number_of_images(weights):
    require(DATA, "Fruits-360 data")
    command = [sys.executable, ROOT / "bench" / "memory.py", "--stage", "featurize", "--images", "1000,4000"]
    command += ["--driver-memory", "512m", "--weights", weights]  # a small heap, as in the README's table
    report = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    small, large = report["runs"]
    assert (small["featurized"], large["featurized"]) == (1000, 4000)
    assert large["driver_python_peak_mb"] - small["driver_python_peak_mb"] < 10  # 3,000 rows of features: 15 MB
    assert large["jvm_peak_mb"] < 1200
    assert max(small["worker_peak_mb"], large["worker_peak_mb"]) < 1500
