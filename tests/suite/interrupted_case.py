"""Run only by test_interrupted_suite.py, in a pytest of its own that gets a signal mid-test."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def test_waits_with_a_spawned_process(spawned):
    process = spawned([sys.executable, "-c", "import time; time.sleep(300)"])
    Path(os.environ["OMNIA_TEST_PID_FILE"]).write_text(str(process.pid))
    time.sleep(300)
