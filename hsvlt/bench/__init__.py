"""Measuring the deployed files: the code behind `hsvlt bench` (reports/export_bench.py) and the timing every
generator of a measured page in docs/ shares.

    export_bench.py   latency, size and memory of every runtime per preset, written to docs/EXPORT.md
    op_profile.py     where a .pte spends its time, by operator kind (the runtime's ETDump)
    measure.py        how everything is timed: PyTorch modules, and exported files each in its own process,
                      timed in turns; the bootstrap intervals; sections of a generated page
"""
