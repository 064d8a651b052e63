"""Every command the README names answers ``--help`` under its documented name."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["synth.render", "synth.render_objects", "synth.ingest_real", "synth.fake_capture", "synth.verify",
            "synth.inspect", "synth.export", "synth.pose_sheet"]


@pytest.mark.parametrize("module", COMMANDS)
def test_command_keeps_its_name(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: python -m {module} "), proc.stdout[:200]
    assert f"python -m {module}" in (REPO / "README.md").read_text()


def test_training_command_composes_its_config():
    proc = subprocess.run([sys.executable, "-m", "train.run", "phase=synthetic", "--cfg", "job"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "task: gslrm" in proc.stdout and "type: gslrm" in proc.stdout
