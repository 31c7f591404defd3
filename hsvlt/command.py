"""The `hsvlt` command: one entry point for every job, each the same parser and code as the module or script it
mirrors (`hsvlt train ...` is `python -m hsvlt.train ...`, `hsvlt export executorch ...` is
`python export/to_executorch.py ...`).

Nothing of a job is imported until it runs, so `hsvlt --help` answers at once: each job's module (hsvlt.train,
hsvlt.export.*, hsvlt.quant.qat, hsvlt.deploy.camera, hsvlt.bench.export_bench, ...) is imported only inside the
job that runs it.

Exit statuses are those of hsvlt/cli.py: 0 when the job succeeded, 2 for a usage error (an unknown job
included), 1 for a failure at run time, 130 when interrupted.
"""

import importlib
import sys
from dataclasses import dataclass

from hsvlt import cli


@dataclass(frozen=True)
class Job:
    module: str  # whose main(argv) runs the job
    mirrors: str  # the command it is the same as
    summary: str
    example: str
    wrapped: bool = False  # main() raises; the script wraps it in cli.run_command under __main__


JOBS = {
    "train": Job("hsvlt.train", "python -m hsvlt.train", "train HSVLT (one process, or under torchrun)",
                 "hsvlt train --data voc --root ~/data"),
    "evaluate": Job("hsvlt.evaluate", "python -m hsvlt.evaluate", "mAP, CF1, OF1 of a checkpoint",
                    "hsvlt evaluate --ckpt runs/hsvlt/best.pt"),
    "qat": Job("hsvlt.quant.qat", "python quant/qat.py", "quantisation-aware training to an int8 program",
               "hsvlt qat --ckpt runs/hsvlt/best.pt --out qat.pt2"),
    "export executorch": Job("hsvlt.export.to_executorch", "python export/to_executorch.py",
                             "an ExecuTorch program (.pte), fp32 or int8",
                             "hsvlt export executorch --ckpt runs/hsvlt/best.pt --out model.pte", wrapped=True),
    "export coreml": Job("hsvlt.export.to_coreml", "python export/to_coreml.py", "a Core ML package (.mlpackage)",
                         "hsvlt export coreml --ckpt runs/hsvlt/best.pt --out HSVLT.mlpackage", wrapped=True),
    "export onnx": Job("hsvlt.export.to_onnx", "python export/to_onnx.py", "an ONNX file, checked in ONNX Runtime",
                       "hsvlt export onnx --ckpt runs/hsvlt/best.pt --out model.onnx", wrapped=True),
    "evaluate-artifact": Job("hsvlt.export.evaluate_artifact", "python export/evaluate_artifact.py",
                             "mAP of an exported file through its own runtime",
                             "hsvlt evaluate-artifact --model model.pte", wrapped=True),
    "predict": Job("hsvlt.predict", "python -m hsvlt.predict", "labels for images, folders or a video, as data",
                   "hsvlt predict photos/ --model model.pte --out predictions"),
    "demo": Job("hsvlt.deploy.camera", "python edge_demo/camera.py", "live detection from a camera or a stream",
                "hsvlt demo --model model.pte --source shapes"),
    "demo --web": Job("hsvlt.deploy.web", "python edge_demo/web.py", "the model in a web page: photo or camera",
                      "hsvlt demo --web --model model.onnx"),
    "bench": Job("hsvlt.bench.export_bench", "python reports/export_bench.py",
                 "latency, size and memory of every runtime",
                 "hsvlt bench --presets hsvlt_lite0", wrapped=True),
    "labels": Job("hsvlt.labels.__main__", "python -m hsvlt.labels", "embed label names for your own data",
                  "hsvlt labels --names cat,dog,sofa --out labels.npz", wrapped=True),
}


USAGE = "usage: hsvlt JOB [options]    (hsvlt JOB --help explains a job's options)"


def usage() -> str:
    width = max(len(name) for name in JOBS)
    lines = [USAGE, "", "jobs:"]
    for name, job in JOBS.items():
        lines.append(f"  {name:<{width}}  {job.summary}")
        lines.append(f"  {'':<{width}}    {job.example}")
    return "\n".join(lines)


def usage_error(message: str) -> SystemExit:
    """A usage error as argparse reports its own: the usage line and `hsvlt: error: ...` on stderr, status 2."""
    print(f"{USAGE}\nhsvlt: error: {message}", file=sys.stderr)
    return SystemExit(2)


def find_job(argv: list[str]) -> tuple[str, list[str]]:
    """The job named by the first one or two words of argv, and the rest of argv."""
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in JOBS:
            return name, argv[words:]
    if argv and argv[0] == "export":
        targets = ", ".join(name.split()[1] for name in JOBS if name.startswith("export "))
        raise usage_error(f"export: choose a target: {targets} (e.g. {JOBS['export executorch'].example})")
    raise usage_error(f"unknown job {argv[0]!r} (hsvlt --help lists the jobs)")


def main(argv: list[str] | None = None) -> None:
    """Run the job argv names. Returns nothing, whatever the job returns: the console script hands main's value
    to sys.exit, which would print a job's figures or predictions as a Python repr and exit with status 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = find_job(argv)
    job = JOBS[name]
    cli.set_program(f"hsvlt {name}")
    entry = importlib.import_module(job.module).main
    if job.wrapped:
        cli.run_command(entry, rest)
    else:
        entry(rest)


if __name__ == "__main__":
    main()
