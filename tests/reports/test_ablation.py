"""The evidence study end to end on tiny settings, and its pieces: every variant builds and learns a step, the
learning signals, the verdicts, the defaults."""

import contextlib
import io
import json
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from hsvlt.bench.measure import kept_sections, write_section
from hsvlt.checkpoint import load_checkpoint, load_model
from hsvlt.data import build_data
from hsvlt.engine import learning_signals
from hsvlt.losses import BCELoss
from hsvlt.models import create_model
from hsvlt.outputs import run_folder
from hsvlt.train import TrainConfig
from reports.ablation import (
    FAMILIES,
    VARIANTS,
    claims_section,
    count_gflops,
    family_rate,
    main,
    parse_args,
    prior_loss,
    pte_latency,
    variant_config,
    variant_model,
)

torch.set_flush_denormal(True)


# The study the two end-to-end tests share (trained once per test process): two variants of the from-scratch
# family, each swept at two rates, at 32 px, the smallest input every stage of the presets takes.
STUDY_FLAGS = ["--quick", "--variants", "hsvlt", "no-ivla", "--sweep-factors", "0.5", "1", "--img-size", "32",
               "--scratch-train-size", "64", "--sweep-train-size", "32", "--val-size", "16", "--test-size", "24",
               "--workers", "0", "--latency-runs", "2", "--bootstrap", "40"]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """The study of STUDY_FLAGS, run through the command with an --out that already holds an earlier study: the new
    one goes to the next free name, with its page and plot (--quick puts them under its folder). {"out": the folder
    it went to, "asked": the --out given, "earlier": the earlier study's file, "printed": what the command printed}."""
    folder = tmp_path_factory.mktemp("study")
    asked, earlier = folder / "runs", folder / "runs" / "results.json"
    asked.mkdir()
    earlier.write_text('{"results": "an earlier study"}')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([*STUDY_FLAGS, "--out", str(asked)])
    return {"out": folder / "runs2", "asked": asked, "earlier": earlier, "printed": printed.getvalue()}


def test_study_sweeps_trains_scores_times_and_writes_page_and_plot(finished_study):
    out = finished_study["out"]

    summary = json.loads((out / "results.json").read_text())
    results = {r["key"]: r for r in summary["results"]}
    assert list(results) == ["hsvlt", "no-ivla"]
    for key, fusion in (("hsvlt", "ivla"), ("no-ivla", "none")):
        model, checkpoint = load_model(out / key / "best.pt")  # trained through hsvlt.train
        assert checkpoint["config"]["fusion"] == fusion
        r = results[key]
        assert [row["factor"] for row in r["sweep"]] in ([0.5, 1.0], [1.0, 0.5])
        best = max(row["val_mAP"] for row in r["sweep"])
        chosen = r["sweep"][0]
        assert r["lr"] == chosen["lr"] and (chosen["val_mAP"] == best or chosen["factor"] == 1.0)
        assert (out / key / "sweep" / f"lr{r['sweep'][1]['lr']:g}" / "best.pt").is_file()
        last = load_checkpoint(out / key / "last.pt")
        assert last["train_state"]["args"]["lr"] == pytest.approx(r["lr"])  # the full run used the choice
        assert 0 <= r["mAP"] <= 100 and r["mAP_ci"][0] <= r["mAP_ci"][1] and r["prior_loss"] > 0
        assert r["params_M"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
        assert r["GFLOPs"] > 0 and len(r["grad_norm"]) == 4
        for kind in ("fp32", "int8"):  # both programs exported and timed
            assert r[f"pte_{kind}_ms"] > 0 and r[f"pte_{kind}_mb"] > 0
    assert len(results["hsvlt"]["S_rms"]) == 4 and results["no-ivla"]["S_rms"] == {}
    assert "reference_minus_this_ci" in results["no-ivla"] and "reference_minus_this" not in results["hsvlt"]
    low, high = results["no-ivla"]["reference_minus_this_small_ci"]
    assert (low <= high) or np.isnan(results["no-ivla"]["reference_minus_this_small"])  # no small item in 24 images

    page = (out / "RESULTS.md").read_text()
    assert "python reports/ablation.py --quick --variants hsvlt" in page
    assert summary["machine"] in page and "Smoke test" in page
    row = next(line for line in page.splitlines() if line.startswith("| (c) without IVLA"))
    assert f"| {results['no-ivla']['mAP']:.1f} (" in row and f"| {results['no-ivla']['params_M']:.2f} |" in row
    assert f"| {results['no-ivla']['pte_int8_ms']:.2f} |" in row
    assert "## Learning rates" in page and "## Learning signals" in page and "(ablation.png)" in page
    plot = cv2.imread(str(out / "ablation.png"))
    assert plot is not None and plot.shape[0] > 300


def test_resume_keeps_finished_variants(finished_study, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(finished_study["out"], study)  # copies keep their modification times
    finished = [study / key / name for key in ("hsvlt", "no-ivla") for name in ("best.pt", "sweep/sweep.json")]
    finished += sorted(study.glob("*/export/*.pte"))  # the fp32 and int8 programs of each
    assert len(finished) == 8
    trained = [path.stat().st_mtime_ns for path in finished]
    main([*STUDY_FLAGS, "--out", str(study), "--resume", "--doc", str(tmp_path / "RESULTS.md"),
          "--plot", str(tmp_path / "ablation.png")])
    assert [path.stat().st_mtime_ns for path in finished] == trained
    printed = capsys.readouterr().out
    assert printed.count("holds a finished run") == 2 and "sweep lr" not in printed
    assert printed.count(".pte (--resume)") == 4
    resumed = json.loads((study / "results.json").read_text())["results"]
    assert [r["key"] for r in resumed] == ["hsvlt", "no-ivla"] and all(r["pte_int8_ms"] > 0 for r in resumed)


def test_a_new_study_gets_its_own_folder_and_leaves_an_earlier_one_as_it_was(finished_study):
    asked, out = finished_study["asked"], finished_study["out"]
    assert f"{asked} holds an earlier study: writing to {out}" in finished_study["printed"]
    assert finished_study["earlier"].read_text() == '{"results": "an earlier study"}'
    assert sorted(path.name for path in asked.iterdir()) == ["results.json"]  # no page, plot or variant there
    assert (out / "RESULTS.md").is_file() and (out / "ablation.png").is_file()
    assert run_folder(asked) == asked.with_name("runs3")  # and the next study, the next free name


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.key)
def test_every_variant_builds_and_learns_a_step(variant):
    bundle = build_data("shapes", image_size=32, train_size=4, val_size=2)
    embeddings = torch.from_numpy(bundle.embeddings)
    args = parse_args(["--quick"])
    torch.manual_seed(0)
    model = create_model(variant_model(variant, args), embeddings, img_size=32,
                         **variant.train_settings)
    images = torch.rand(2, 3, 32, 32)
    targets = (torch.rand(2, len(bundle.labels)) > 0.5).float()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    BCELoss()(model(images), targets).backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    signals = learning_signals(model, images, targets)
    assert len(signals["grad_norm"]) == 4 and all(value > 0 for value in signals["grad_norm"])
    has_labels = variant.train_settings.get("fusion") != "none"
    assert bool(signals["S_rms"]) == has_labels and all(value > 0 for value in signals["S_rms"].values())


def test_learning_signals_see_a_saturated_language_gate_double_the_label_tokens():
    bundle = build_data("shapes", image_size=32, train_size=2, val_size=2)
    torch.manual_seed(0)
    model = create_model("hsvlt_pico", torch.from_numpy(bundle.embeddings), img_size=32,  # gates start closed
                         language_update="paper")
    images, targets = torch.rand(2, 3, 32, 32), torch.zeros(2, len(bundle.labels))
    closed = learning_signals(model, images, targets)["L_rms"]
    with torch.no_grad():  # tanh(...) -> 1: L <- 2 (L + S) in every block that hands L on
        for block in (b for stage in model.stages for b in stage.blocks if b.language_gate is not None):
            block.language_gate.gate[2].weight.fill_(10.0)
    saturated = learning_signals(model, images, targets)["L_rms"]
    ratios = [saturated[stage] / closed[stage] for stage in ("0", "1", "2")]
    assert ratios[0] == pytest.approx(2.0, rel=1e-3) and ratios[2] > ratios[0]


def test_prior_loss_is_the_loss_of_scoring_each_class_at_its_frequency():
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 1]], dtype=np.float32)
    p = np.array([0.5, 0.25])
    expected = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(1).mean()
    assert prior_loss(targets) == pytest.approx(expected, rel=1e-5)


def test_a_study_whose_exports_all_fail_records_no_latency(tmp_path, capsys):
    """Where no program can be exported (no checkpoint here; a machine without executorch alike), the variants
    get no latency or size, and the study goes on."""
    results = [{"key": "hsvlt"}, {"key": "no-ivla"}]
    pte_latency(results, {r["key"]: tmp_path / r["key"] for r in results}, latency_runs=2)
    assert all(r[f"pte_{kind}_{unit}"] is None for r in results for kind in ("fp32", "int8") for unit in ("ms", "mb"))
    assert capsys.readouterr().out.count("export failed") == 4


def test_flop_count_of_a_known_layer():
    conv = nn.Conv2d(3, 4, kernel_size=1, bias=False)  # 8 x 8 x 3 x 4 multiply-adds
    assert count_gflops(conv, 8) == pytest.approx(2 * 8 * 8 * 3 * 4 / 1e9)


def result(key, title, learned=True, difference=None, interval=None, small=None, small_interval=None):
    row = {"key": key, "title": title, "learned": learned}
    if difference is not None:
        row.update(reference_minus_this=difference, reference_minus_this_ci=interval,
                   reference_minus_this_small=small, reference_minus_this_small_ci=small_interval)
    return row


def test_claims_verdicts_follow_the_paired_interval_within_each_family():
    results = [
        result("hsvlt", "(a)"),
        result("no-csa", "(b)", difference=3.0, interval=(1.0, 5.0), small=10.0, small_interval=(-2.0, 12.0)),
        result("late", "(d)", difference=1.0, interval=(-1.0, 3.0), small=5.0, small_interval=(2.0, 8.0)),
        result("no-ivla", "(c)", difference=-4.0, interval=(-6.0, -2.0), small=-5.0, small_interval=(-7.0, -3.0)),
        result("lite0", "(f)"),
        result("lite0-pooled", "(g)", learned=False, difference=8.0, interval=(6.0, 10.0), small=10.0,
               small_interval=(8.0, 12.0)),
    ]
    rows = {line.split(" | ")[1].split(" vs ")[1]: line for line in claims_section(results).splitlines()
            if " vs " in line}
    # The verdict reads the mAP interval first, then AP small's.
    assert "reference better: difference resolved; AP small: no resolved difference" in rows["(b)"]
    assert re.search(r"\+10\.0 \(-2\.0 to \+12\.0\)", rows["(b)"])
    assert "no resolved difference (interval contains 0); AP small: reference better" in rows["(d)"]
    assert re.search(r"\+1\.0 \(-1\.0 to \+3\.0\)", rows["(d)"])
    assert "reference worse: difference resolved; AP small: reference worse" in rows["(c)"]
    assert "(f) vs (g)" in rows["(g)"] and "none: (g) did not learn" in rows["(g)"]
    assert "feedback" not in claims_section(results)


def test_no_two_variants_train_the_same_model():
    """Each variant's settings change the model it builds: a variant whose settings restate its family's would
    compare a model with itself."""
    embeddings = torch.from_numpy(build_data("shapes", image_size=32, train_size=4, val_size=2).embeddings)
    study = parse_args([])
    configs = {v.key: create_model(variant_model(v, study), embeddings, img_size=32, **v.train_settings).config
               for v in VARIANTS}
    assert len(set(configs.values())) == len(VARIANTS), configs


def test_quick_and_full_defaults_and_variant_choice():
    quick = parse_args(["--quick"])
    assert quick.model == "hsvlt_pico" and str(quick.page).startswith("runs/ablation-quick")
    full = parse_args([])
    assert full.model == "hsvlt_nano" and full.edge_model == "hsvlt_lite0" and str(full.page) == "docs/RESULTS.md"
    assert [v.key for v in full.variant_list] == [v.key for v in VARIANTS]
    chosen = parse_args(["--variants", "lite0-pooled", "late", "hsvlt"])
    assert [v.key for v in chosen.variant_list] == ["hsvlt", "late", "lite0-pooled"]  # table order
    assert variant_model(chosen.variant_list[2], chosen) == "hsvlt_lite0"
    # Each family trains on its own budget, every variant with the loss the study was measured with, whatever
    # hsvlt.train's default for the data.
    assert full.budget("scratch") == (12000, 7) and full.budget("edge") == (4000, 3)
    by_key = {v.key: v for v in VARIANTS}
    for key, budget in (("late", (12000, 7)), ("lite0-late", (4000, 3))):
        config = variant_config(by_key[key], full, full.out)
        assert (config.train_size, config.epochs, config.resolved().loss) == (*budget, "bce")
    assert variant_config(by_key["late"], parse_args(["--loss", "asl"]), full.out).resolved().loss == "asl"
    custom = parse_args(["--scratch-train-size", "500", "--scratch-epochs", "2", "--epochs", "4"])
    assert custom.budget("scratch") == (500, 2) and custom.budget("edge") == (4000, 4)


def test_each_family_has_its_rate_and_sweep_and_the_flags_override_both():
    by_key = {v.key: v for v in VARIANTS}
    full = parse_args([])
    # From scratch at the family's own rate, unswept; the edge family swept around hsvlt.train's pretrained rate.
    assert full.factors("scratch") == (1.0,) and full.factors("edge") == (0.3, 1.0, 3.0)
    assert family_rate(by_key["no-csa"], full) == FAMILIES["scratch"].rate
    assert variant_config(by_key["late"], full, full.out).resolved().lr == FAMILIES["scratch"].rate
    assert family_rate(by_key["lite0-late"], full) == TrainConfig(model="hsvlt_lite0").resolved().lr
    chosen = parse_args(["--lr", "0.003", "--sweep-factors", "0.5", "1"])
    assert chosen.factors("scratch") == chosen.factors("edge") == (0.5, 1.0)
    assert family_rate(by_key["late"], chosen) == family_rate(by_key["lite0"], chosen) == 0.003


def test_a_page_rewritten_whole_keeps_the_sections_other_reports_own(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text("# Old page\n")
    write_section(page, "language-update", "## Table\n\n| a |")
    write_section(page, "language-update", "## Table\n\n| b |")  # replaced in place, not added twice
    write_section(page, "other", "more")
    kept = kept_sections(page)
    assert kept == "\n<!-- language-update -->\n## Table\n\n| b |\n<!-- /language-update -->\n" \
                  "\n<!-- other -->\nmore\n<!-- /other -->\n"
    assert page.read_text().startswith("# Old page\n\n<!-- language-update -->")
