"""The built-in demo model: built once, whoever asks first."""

from __future__ import annotations

import os
import subprocess
import sys

from mixtral_cli.sources.demo import demo_model_path


def test_two_first_runs_at_once_both_succeed(tmp_path):
    # A home of their own: no demo model yet, so both processes set out to build it.
    env = {**os.environ, "MIXTRAL_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "mixtral_cli", "complete", "-m", "tiny", "-n", "4", "--temperature", "0", "Hi"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]

    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert results[0][1] == results[1][1]  # greedy, same model: the same answer
    name = demo_model_path().name
    assert sorted(p.name for p in (tmp_path / "home" / "demo").iterdir()) == [name]  # and no lock file left
