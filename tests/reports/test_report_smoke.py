"""The report generators run end to end on tiny sizes (their figures mean nothing here: the pages are what is
checked; the eager-QAT study's page is checked in tests/quant/test_eager.py, which reads its programs). The full runs
are the scripts themselves: reports/quantization.py, reports/train_speed.py."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[2]


def test_benchmark_table_renders(capsys):
    from reports import train_speed

    rows = train_speed.main(["--presets", "hsvlt_pico", "--batch-size", "2", "--steps", "1", "--workers", "0"])
    assert rows[0]["preset"] == "hsvlt_pico" and rows[0]["train_img_s"] > 0
    assert "| hsvlt_pico |" in capsys.readouterr().out


@pytest.mark.parametrize("script", sorted(path.name for path in (REPO / "reports").glob("*.py")
                                          if path.name != "__init__.py"))
def test_each_report_runs_as_a_script(script):
    """`python reports/X.py` puts reports/ first on the import path: no report may shadow a package it imports."""
    done = subprocess.run([sys.executable, str(REPO / "reports" / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-1000:]
