"""The tier rules of tests/conftest.py: launching a tempo command outside the slow tier fails the test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import launches_tempo


@pytest.mark.parametrize("args, tempo", [
    ([sys.executable, "-m", "tempo.train", "model=tsm"], True),
    (f"{sys.executable} -m tempo.prepare dataset=ucf101", True),
    (["/venv/bin/tempo-evaluate", "--help"], True),
    ([sys.executable, "-m", "mkdocs", "build"], False),
    (["git", "check-ignore", "tempo.train"], False),
])
def test_which_command_lines_run_tempo(args, tempo):
    assert launches_tempo(args) is tempo


def test_an_unmarked_test_launching_tempo_fails_before_the_process_starts():
    with pytest.raises(pytest.fail.Exception, match="mark them @pytest.mark.slow"):
        subprocess.run([sys.executable, "-m", "tempo.train", "--help"], capture_output=True)
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0  # other processes are untouched
