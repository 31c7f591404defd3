"""Benchmark the deployment targets of each preset in one run: one table, written to docs/EXPORT.md.

    python reports/export_bench.py                                    # hsvlt_nano and hsvlt_lite0 at 224 px
    python reports/export_bench.py --presets hsvlt_lite0 --runs 200
    python reports/export_bench.py --ablation                         # also: each export-time rewrite switched off
    python reports/export_bench.py --browser-only                     # only hsvlt_lite0 in Chromium against Python

The benchmark is hsvlt.bench.export_bench, also run as `hsvlt bench` (--help explains every flag).
"""

from hsvlt.bench.export_bench import main
from hsvlt.cli import run_command

if __name__ == "__main__":
    run_command(main)
