"""reports/export_bench.py end to end on a tiny preset: every runtime measured, the report and its plot written (the
timings themselves are not checked here: speed targets live in the benchmark's table, not in tests)."""

import re

import pytest

from hsvlt.bench import export_bench as bench
from hsvlt.deploy.manifest import read_manifest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One run of the benchmark on hsvlt_pico at 32 px with the int8 study, which times one int8 choice beside the
    default (the depthwise convolutions float) against fp32: (the report, the folder of its artifacts). Both tests
    read this run: every program it measures costs a lowering, by far the run's largest cost."""
    folder = tmp_path_factory.mktemp("bench")
    out, work = folder / "EXPORT.md", folder / "work"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "INT8_CHOICES", bench.INT8_CHOICES[1:2])
        bench.main(["--presets", "hsvlt_pico", "--img-size", "32", "--runs", "3", "--warmup", "1", "--int8-study",
                    "--out", str(out), "--workdir", str(work)])
    return out, work


def test_bench_writes_the_table_the_targets_and_the_profile(bench_run):
    out, work = bench_run
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


def test_int8_study_times_each_choice_against_fp32(bench_run):
    """The study's int8 choice timed against the benchmark's own fp32 program (not exported a second time)."""
    out, work = bench_run
    report = out.read_text()
    study = report[report.index("## Int8 choices"):]
    name = bench.INT8_CHOICES[1][0]
    assert re.search(rf"\| {re.escape(name)} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", study), study
    assert "depthwise conv 0 / " in study  # every depthwise conv float
    assert not list(work.glob("*_study_fp32.pte")) and len(list(work.glob("*_study_*.pte"))) == 1
