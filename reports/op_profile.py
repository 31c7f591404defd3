"""Where an ExecuTorch program spends its time: the delegate's own per-operator times, summed by operator kind.

    python reports/op_profile.py model.pte              # 2 threads (the cores of this machine), 20 runs
    python reports/op_profile.py model.pte --threads 1

The profile is hsvlt.bench.op_profile (--help explains every flag).
"""

from hsvlt.bench.op_profile import main
from hsvlt.cli import run_command

if __name__ == "__main__":
    run_command(main)
