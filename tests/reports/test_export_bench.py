"""reports/export_bench.py end to end on a tiny preset: every runtime measured, the report and its plot written (the
timings themselves are not checked here: speed targets live in the benchmark's table, not in tests)."""

import re

import pytest

from hsvlt.bench import export_bench as bench
from hsvlt.deploy.manifest import read_manifest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def test_bench_writes_the_table_the_targets_and_the_profile(tmp_path):
    out, work = tmp_path / "EXPORT.md", tmp_path / "work"
    bench.main(["--presets", "hsvlt_pico", "--img-size", "32", "--runs", "3", "--warmup", "1", "--out", str(out),
                "--workdir", str(work)])
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


def test_int8_study_times_each_choice_against_fp32(tmp_path, monkeypatch):
    """One int8 choice beside the default (the depthwise convolutions float), timed against fp32."""
    choices = bench.INT8_CHOICES[1:2]
    monkeypatch.setattr(bench, "INT8_CHOICES", choices)
    config = bench.BenchConfig(img_size=32, labels="shapes", threads=1, runs=2, warmup=0)
    table = bench.int8_study("hsvlt_pico", config, tmp_path)
    for name, _, _ in choices:
        assert re.search(rf"\| {re.escape(name)} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", table), name
    assert "depthwise conv 0 / " in table  # every depthwise conv float
