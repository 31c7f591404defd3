"""The benchmark end to end on a tiny preset, through the installed `hsvlt bench` as users run it: the job exits 0
with a clean stderr, every runtime is measured, the report and its plot are written; and its int8 study over the
same run (the timings themselves are not checked here: speed targets live in the benchmark's table, not in
tests)."""

import re

import pytest
from conftest import assert_clean, run_installed

from hsvlt.bench import export_bench as bench
from hsvlt.deploy.manifest import read_manifest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
PRESET, SIZE, RUNS, WARMUP = "hsvlt_pico", 32, 3, 1


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, installed_hsvlt):
    """One run of `hsvlt bench` on hsvlt_pico at 32 px, its files kept: (the finished process, the report, the folder
    of its artifacts). Every test here reads this run: every program it measures costs a lowering, by far the
    run's largest cost."""
    folder = tmp_path_factory.mktemp("bench")
    out, work = folder / "EXPORT.md", folder / "work"
    done = run_installed(installed_hsvlt, ["bench", "--presets", PRESET, "--img-size", str(SIZE), "--runs", str(RUNS),
                                           "--warmup", str(WARMUP), "--out", str(out), "--workdir", str(work)], folder)
    return done, out, work


def test_the_installed_bench_job_exits_0_with_a_clean_stderr(bench_run):
    done, out, _ = bench_run
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert_clean(done.stderr)
    assert out.exists(), done.stdout[-2000:]


def test_bench_writes_the_table_the_targets_and_the_profile(bench_run):
    _, out, work = bench_run
    report = out.read_text()
    for row in ("PyTorch eager fp32", "ExecuTorch XNNPACK fp32", "ExecuTorch XNNPACK int8", "ONNX Runtime fp32"):
        assert f"| {row} |" in report
    assert "- hsvlt_pico: int8 .pte <= 30% of fp32:" in report
    assert "| best ms |" in report and " best -> " in report  # latency targets judged at p50 and best
    assert "| Fully Connected (NC, F32) GEMM |" in report  # the fp32 .pte's operator profile
    assert "int8 / fp32 .pte p50 =" in report and "| int8 .pte operator kind |" in report  # side by side
    assert "layers kept float in the int8 program: norms" in report
    assert "GEMM ceiling" in report and "XNNPACK fully connected" in report
    assert out.with_suffix(".png").stat().st_size > 0
    quantization = read_manifest(work / "hsvlt_pico_int8.pte")["quantization"]  # what the program holds in int8
    assert quantization["float_layers"] == ["norms"] and quantization["layers"]["conv"]["int8"] > 0
    assert quantization["layers"]["depthwise conv"]["int8"] > 0 and quantization["rewrites_off"] == []


@pytest.fixture(scope="module")
def study(bench_run):
    """The int8 study (--int8-study) over that run's checkpoint and fp32 program, with one int8 choice beside the
    default (the depthwise convolutions float): (its section of the report, the folder)."""
    _, _, work = bench_run
    config = bench.BenchConfig(presets=(PRESET,), img_size=SIZE, runs=RUNS, warmup=WARMUP)
    artifacts = {"eager": work / f"{PRESET}.pt", "pte": work / f"{PRESET}_fp32.pte"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "INT8_CHOICES", bench.INT8_CHOICES[1:2])
        return bench.int8_study(PRESET, config, work, artifacts), work


def test_int8_study_times_each_choice_against_fp32(study):
    """The study's int8 choice timed against the benchmark's own fp32 program (not exported a second time)."""
    section, work = study
    name = bench.INT8_CHOICES[1][0]
    assert re.search(rf"\| {re.escape(name)} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", section), section
    assert "depthwise conv 0 / " in section  # every depthwise conv float
    assert not list(work.glob("*_study_fp32.pte")) and len(list(work.glob("*_study_*.pte"))) == 1
