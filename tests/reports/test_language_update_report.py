"""The language-update report's settings and its page section, written again from a run's record (--rewrite)."""

import json

import torch

from hsvlt.data import build_data
from hsvlt.engine import learning_signals
from hsvlt.models import create_model
from reports.language_update import LanguageUpdateConfig, failed_checks, main, parse_args


def test_quick_sizes_fill_what_the_flags_leave_unset():
    quick = parse_args(["--quick"])
    assert (quick.model, quick.train_size, quick.val_size, quick.epochs) == ("hsvlt_pico", 64, 32, 1)
    full = parse_args([])
    assert (full.model, full.train_size, full.val_size, full.epochs) == ("hsvlt_nano", 4000, 400, 3)
    assert parse_args(["--quick", "--train-size", "128"]).train_size == 128
    built = LanguageUpdateConfig(quick=True).resolved()
    assert built == LanguageUpdateConfig(**{**vars(quick), "command": built.command})


def test_rewrite_writes_the_section_of_the_recorded_run_and_keeps_the_page(tmp_path, capsys):
    bundle = build_data("shapes", image_size=32, train_size=2, val_size=2)
    torch.manual_seed(0)
    model = create_model("hsvlt_pico", torch.from_numpy(bundle.embeddings), img_size=32, language_update="paper")
    signals = learning_signals(model, torch.rand(2, 3, 32, 32), torch.zeros(2, len(bundle.labels)))
    result = {"update": "paper", "lr": 0.002, "lr_factor": 1.0, "val_mAP": 41.5, "val_CF1": 30.25,
              "train_minutes": 0.5, **signals}
    command = "python reports/language_update.py --quick --img-size 32 --updates paper --train-args=--no-head-norm"
    record = tmp_path / "results.json"
    record.write_text(json.dumps({"command": command, "machine": "a test machine", "minutes": 1.5,
                                  "results": [result]}))
    page = tmp_path / "RESULTS.md"
    page.write_text("# Results\n\nthe evidence study's text\n")

    for _ in range(2):  # written again in place, not added twice
        main(["--rewrite", str(record), "--doc", str(page)])
    text = page.read_text()
    assert text.startswith("# Results\n\nthe evidence study's text\n")
    assert text.count("<!-- language-update-no-head-norm -->") == 1
    assert "## The language update: which one trains from scratch, with `--no-head-norm`" in text
    assert f"in 1.5 minutes on a test machine. Reproduce it with:\n\n    {command}\n" in text
    assert "`hsvlt_pico` from scratch on `shapes`: 64 scenes x 1 epochs at 32 px,\nbatch 32, seed 0, validated on 32" \
           in text
    row = next(line for line in text.splitlines() if line.startswith("| paper |"))
    assert "| 0.002 | 41.5 | 30.2 |" in row
    failed = failed_checks(result)
    assert row.endswith(f"| {'no: ' + ', '.join(failed) if failed else '**yes**'} |")
    assert "(section language-update-no-head-norm)" in capsys.readouterr().out
