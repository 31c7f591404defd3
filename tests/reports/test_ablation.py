"""The ablation runner end to end on tiny settings, and its measurement helpers."""

import json
import re

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from hsvlt.checkpoint import load_model
from hsvlt.data.fashion_mosaic import DEFAULT_ROOT
from reports.ablation import claims_section, count_gflops, main, parse_args

torch.set_flush_denormal(True)
HAS_FASHION_MNIST = (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file()


@pytest.mark.parametrize("data", [
    "shapes",
    pytest.param("fashion-mosaic", marks=pytest.mark.skipif(not HAS_FASHION_MNIST,
                                                            reason="needs Debian's dataset-fashion-mnist")),
])
def test_runner_trains_scores_and_writes_page_and_plot(tmp_path, data):
    out = tmp_path / "runs"
    argv = ["--quick", "--data", data, "--variants", "hsvlt", "no-ivla", "late", "--train-size", "64",
            "--val-size", "16", "--test-size", "24", "--workers", "0", "--latency-runs", "2", "--bootstrap", "40",
            "--out", str(out), "--doc", str(tmp_path / "docs" / "RESULTS.md"),
            "--plot", str(tmp_path / "docs" / "ablation.png")]
    main(argv)

    summary = json.loads((out / "results.json").read_text())
    results = {r["key"]: r for r in summary["results"]}
    assert list(results) == ["hsvlt", "no-ivla", "late"]
    for key, fusion in (("hsvlt", "ivla"), ("no-ivla", "none"), ("late", "late")):
        model, checkpoint = load_model(out / key / "best.pt")  # trained through hsvlt.train
        assert checkpoint["config"]["fusion"] == fusion and checkpoint["data"]["name"] == data
        r = results[key]
        assert 0 <= r["mAP"] <= 100 and r["mAP_ci"][0] <= r["mAP_ci"][1]
        assert all(np.isfinite(r[f"AP_{bucket}"]) for bucket in ("small", "medium", "large"))
        assert r["params_M"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
        assert r["GFLOPs"] > 0 and r["latency_ms"] > 0
    assert results["no-ivla"]["params_M"] < results["late"]["params_M"] < results["hsvlt"]["params_M"]
    assert "a_minus_this_ci" in results["late"] and "a_minus_this" not in results["hsvlt"]

    page = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "python reports/ablation.py --quick --data " + data in page
    assert summary["machine"] in page and "Smoke test" in page
    row = next(line for line in page.splitlines() if line.startswith("| (d) late fusion"))
    assert f"| {results['late']['mAP']:.1f} (" in row and f"| {results['late']['params_M']:.2f} |" in row
    assert "![" in page and "(ablation.png)" in page
    plot = cv2.imread(str(tmp_path / "docs" / "ablation.png"))
    assert plot is not None and plot.shape[0] > 300


def test_resume_keeps_finished_variants(tmp_path, capsys):
    argv = ["--quick", "--data", "shapes", "--variants", "no-ivla", "--train-size", "32", "--val-size", "8",
            "--test-size", "8", "--workers", "0", "--latency-runs", "1", "--bootstrap", "5", "--out", str(tmp_path)]
    main(argv)
    trained = (tmp_path / "no-ivla" / "best.pt").stat().st_mtime_ns
    main(argv + ["--resume"])
    assert (tmp_path / "no-ivla" / "best.pt").stat().st_mtime_ns == trained
    assert "holds a finished run" in capsys.readouterr().out


def test_flop_count_of_a_known_layer():
    conv = nn.Conv2d(3, 4, kernel_size=1, bias=False)  # 8 x 8 x 3 x 4 multiply-adds
    assert count_gflops(conv, 8) == pytest.approx(2 * 8 * 8 * 3 * 4 / 1e9)


def test_claims_verdicts_follow_the_paired_interval():
    results = [
        {"key": "hsvlt", "title": "(a)", "AP_small": 50.0},
        {"key": "no-csa", "title": "(b)", "AP_small": 40.0, "a_minus_this": 3.0, "a_minus_this_ci": (1.0, 5.0)},
        {"key": "late", "title": "(d)", "AP_small": 55.0, "a_minus_this": 1.0, "a_minus_this_ci": (-1.0, 3.0)},
        {"key": "no-ivla", "title": "(c)", "AP_small": 60.0, "a_minus_this": -4.0, "a_minus_this_ci": (-6.0, -2.0)},
    ]
    rows = {line.split(" | ")[0][2:]: line for line in claims_section(results).splitlines() if line.startswith("| (")}
    assert "(a) better: difference resolved" in rows["(b)"] and "+10.0" in rows["(b)"]
    assert "no resolved difference" in rows["(d)"] and re.search(r"\+1\.0 \(-1\.0 to \+3\.0\)", rows["(d)"])
    assert "(a) worse: difference resolved" in rows["(c)"]
    assert "not part of this run" in claims_section(results[1:])


def test_quick_and_full_defaults_and_variant_choice():
    quick = parse_args(["--quick"])
    assert quick.model == "hsvlt_pico" and str(quick.doc).startswith("runs/ablation-quick")
    full = parse_args([])
    assert full.model == "hsvlt_nano" and str(full.doc) == "docs/RESULTS.md" and full.img_size == 64
    assert [v.key for v in full.variant_list][:5] == ["hsvlt", "no-csa", "no-ivla", "late", "feedback"]
    chosen = parse_args(["--variants", "late", "hsvlt"])
    assert [v.key for v in chosen.variant_list] == ["hsvlt", "late"]  # table order
