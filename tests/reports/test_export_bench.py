"""reports/export_bench.py end to end on a tiny preset: every runtime measured, the report and its plot written (the
timings themselves are not checked here: speed targets live in the benchmark's table, not in tests)."""

import re

import pytest

from hsvlt.deploy.manifest import read_manifest
from reports import export_bench as bench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def test_bench_writes_the_table_the_targets_and_the_profile(tmp_path):
    out, work = tmp_path / "EXPORT.md", tmp_path / "work"
    bench.main(["--presets", "hsvlt_pico", "--img-size", "32", "--runs", "3", "--warmup", "1", "--out", str(out),
                "--int8-study", "--workdir", str(work)])
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
    for name, _, _ in bench.INT8_CHOICES:  # every int8 choice timed against fp32
        assert re.search(rf"\| {re.escape(name)} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", report), name
    quantization = read_manifest(work / "hsvlt_pico_int8.pte")["quantization"]  # what the program holds in int8
    assert quantization["float_layers"] == ["norms"] and quantization["layers"]["conv"]["int8"] > 0
    assert quantization["layers"]["depthwise conv"]["int8"] > 0 and quantization["rewrites_off"] == []
