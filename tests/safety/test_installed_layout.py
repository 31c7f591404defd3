"""What `pip install` puts into site-packages: the `hsvlt` package and its dist-info, nothing else. The commands'
folders (export/, quant/, edge_demo/, reports/) stay in the checkout, so an install never shadows a user's own
modules of those names; and the installed library imports from any folder, without the checkout.

The install is a real, non-editable one (a wheel built from a copy of the checkout and unpacked into a folder of
its own, offline: no index, no dependencies), so it sees exactly what pyproject.toml ships."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED_FROM = ("pyproject.toml", "README.md", "hsvlt", "export", "quant", "edge_demo", "reports")


def test_a_non_editable_install_adds_hsvlt_alone_and_imports_from_anywhere(tmp_path):
    source, target, elsewhere = tmp_path / "source", tmp_path / "site-packages", tmp_path / "elsewhere"
    source.mkdir()
    for name in SHIPPED_FROM:  # a copy: building writes build/ and *.egg-info beside the sources
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              "--quiet", "--disable-pip-version-check", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    # --target puts the console scripts in bin/ (a virtual environment's bin/, not an importable name)
    top_level = sorted(path.name for path in target.iterdir() if path.name != "bin")
    assert len(top_level) == 2 and top_level[0] == "hsvlt" and top_level[1].startswith("hsvlt-"), top_level
    assert top_level[1].endswith(".dist-info")
    assert sorted(path.name for path in (target / "bin").iterdir()) == ["hsvlt"]

    elsewhere.mkdir()
    probe = ("import hsvlt, hsvlt.export.to_executorch, hsvlt.export.parity, hsvlt.quant.qat, hsvlt.deploy.camera, "
             "hsvlt.bench.export_bench, hsvlt.command\n"
             "print(len(hsvlt.export.parity.PARITY_SCENES))\n"
             "print(hsvlt.__file__)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    *_, scenes, location = done.stdout.strip().splitlines()
    assert Path(location).is_relative_to(target)
    assert scenes == "32"  # the exporters' parity scenes ship as package data
