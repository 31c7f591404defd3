"""The language update of IVLA (hsvlt/models/ivla.py, GatedResidual): the paper's form kept exactly, the bounded
default keeping the label tokens bounded where the paper's compounds, checkpoints written before the choice
existed read as the paper's, and bad values refused."""

import json
from dataclasses import replace

import pytest
import torch

from hsvlt.checkpoint import CheckpointError, load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from hsvlt.evaluate import main as evaluate_main
from hsvlt.export import to_onnx
from hsvlt.models import HSVLT, HSVLTConfig
from hsvlt.models.config import LANGUAGE_UPDATES
from hsvlt.models.ivla import GatedResidual, IVLABlock, recording_block_scales
from hsvlt.run_log import LABEL_RMS_WARN, PAPER_LABEL_RMS_WARN, TrainingWatch, label_rms_bound
from hsvlt.train import MODEL_CHOICES
from hsvlt.train import main as train_main

torch.set_flush_denormal(True)
DEEP = HSVLTConfig(preset="deep-test", depths=(1, 1, 10, 1), widths=(16, 24, 32, 40), img_size=64)


def embeddings(classes: int = 5, dim: int = 384) -> torch.Tensor:
    return torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))


def saturate_gates(model: torch.nn.Module) -> None:
    """tanh(W2 ReLU(W1 x)) -> 1 wherever ReLU passes: the gates as training left them in the runs that blew up."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GatedResidual):
                module.gate[2].weight.fill_(10.0)
                if module.scale is not None:
                    module.scale.fill_(1.0)


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def test_paper_update_computes_todays_block_bit_for_bit():
    """IVLABlock's forward as it was before the update became a choice, written out: the paper's value must give
    exactly its outputs from the same state dict (no new parameter, the same operations in the same order)."""
    block = IVLABlock(torch.nn.Identity(), 16, num_heads=2, language_update="paper").eval()
    randomise(block)
    visual, labels = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 16)
    with torch.no_grad():
        tokens = block.token_norm(visual.flatten(2).transpose(1, 2))
        queries = block.label_norm(labels)
        attended, attention = block.cross_attention(queries, tokens)
        multimodal = block.multimodal_proj(block.language_proj(queries) * attended)
        x = labels + block.drop_path(multimodal)
        expected = x + block.language_gate.gate(x) * x
        got = block(visual, labels)
    assert torch.equal(got[1], expected) and torch.equal(got[2], multimodal) and torch.equal(got[3], attention)
    gate = block.language_gate
    assert set(gate.state_dict()) == {"gate.0.weight", "gate.2.weight"}
    assert torch.equal(gate(labels, multimodal), expected)


def label_scale_after_blocks(model: torch.nn.Module) -> list[float]:
    """The label tokens' RMS after each block of the stage with most blocks."""
    scales = []
    hooks = [block.register_forward_hook(lambda _, __, out: scales.append(float(out[1].pow(2).mean().sqrt())))
             for block in model.stages[2].blocks]
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    return scales


def test_post_norm_keeps_label_tokens_bounded_with_saturated_gates_where_the_papers_compounds():
    torch.manual_seed(0)
    paper = HSVLT(replace(DEEP, language_update="paper"), embeddings()).eval()
    torch.manual_seed(0)
    bounded = HSVLT(replace(DEEP, language_update="post_norm"), embeddings()).eval()
    saturate_gates(paper)
    saturate_gates(bounded)
    compounding, kept = label_scale_after_blocks(paper), label_scale_after_blocks(bounded)
    assert all(later > 1.8 * earlier for earlier, later in zip(compounding, compounding[1:])), compounding
    assert compounding[-1] > 100
    assert max(kept) < 10, kept


@pytest.mark.parametrize("update", [u for u in LANGUAGE_UPDATES if u not in ("paper", "stage_norm")])
def test_a_bounded_update_grows_label_tokens_by_at_most_twice_the_update_per_block(update):
    """update_gate: |L + M + g(M) M| <= |L| + 2|M| (|g| < 1); layer_scale at its start: the paper's branch x 0.01;
    post_norm: unit RMS (before its affine part, which starts at 1)."""
    gate = GatedResidual(16, update)
    randomise(gate.gate)
    with torch.no_grad():
        gate.gate[2].weight.fill_(10.0)
        labels, update_ = torch.randn(2, 5, 16) * 3, torch.randn(2, 5, 16)
        out = gate(labels, update_)

    def rms(x):
        return float(x.pow(2).mean().sqrt())

    assert rms(out) <= rms(labels) + 2 * rms(update_) + 1e-5
    if update == "post_norm":
        assert rms(out) == pytest.approx(1.0, abs=1e-3)


def test_an_unknown_update_is_refused_naming_the_choices(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown language_update 'bounded'; choose from paper, update_gate"):
        HSVLTConfig(language_update="bounded")
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--update", "bounded", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "argument --update/--language-update: invalid choice: 'bounded'" in capsys.readouterr().err


def tiny_run(out, *flags):
    return train_main(["--model", "hsvlt_pico", "--img-size", "32", "--train-size", "32", "--val-size", "16",
                       "--batch-size", "16", "--workers", "0", "--device", "cpu", "--out", str(out), *flags])


def as_written_before_the_choice(path) -> None:
    """Rewrite a checkpoint as this code wrote it before the language update was a setting: no key for it."""
    state = load_checkpoint(path)
    for key in MODEL_CHOICES:
        del state["config"][key]
        if "train_state" in state:
            del state["train_state"]["args"][key]
    save_checkpoint(state, path)


def test_a_checkpoint_without_the_key_loads_with_the_papers_update_and_resumes(tmp_path):
    out = tmp_path / "run"
    tiny_run(out, "--epochs", "1", "--update", "paper")
    for name in ("best.pt", "last.pt"):
        as_written_before_the_choice(out / name)
    model, _ = load_model(out / "best.pt")
    assert model.config.language_update == "paper"
    summary = tiny_run(out, "--epochs", "2", "--resume")  # no --update: the checkpoint's model decides
    assert summary["epoch"] in (1, 2)
    assert load_checkpoint(out / "last.pt")["config"]["language_update"] == "paper"
    with pytest.raises(SystemExit) as exit_info:  # another update needs --override
        tiny_run(out, "--epochs", "3", "--resume", "--update", "update_gate")
    assert "language_update 'paper' -> 'update_gate'" in str(exit_info.value.code)
    evaluate_main(["--ckpt", str(out / "best.pt"), "--workers", "0", "--json", str(tmp_path / "eval.json")])
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["mAP"] == pytest.approx(load_checkpoint(out / "best.pt")["metrics"]["mAP"], abs=1e-4)
    exported = to_onnx.main(["--ckpt", str(out / "best.pt"), "--out", str(tmp_path / "old.onnx"),
                             "--parity-images", "4"])
    assert exported["parity"]["max_abs_diff"] < 1e-4


def test_a_checkpoint_naming_an_update_this_code_does_not_know_is_refused_in_one_line(checkpoint):
    state = load_checkpoint(checkpoint)
    state["config"]["language_update"] = "from-the-future"
    with pytest.raises(CheckpointError, match="unknown language_update 'from-the-future'; choose from paper"):
        model_from_checkpoint(state, checkpoint)


def test_training_records_the_label_scale_and_warns_when_it_blows_up(tmp_path, capsys):
    out = tmp_path / "run"
    tiny_run(out, "--epochs", "1")
    entry = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert set(entry["label_rms"]) == {"0", "1", "2", "3"} and max(entry["label_rms"].values()) < LABEL_RMS_WARN
    events = list((out / "tensorboard").glob("events.*"))
    assert events and b"label_tokens/rms_stage_2" in events[0].read_bytes()

    model = HSVLT(replace(DEEP, language_update="paper"), embeddings())
    saturate_gates(model)
    with torch.no_grad(), recording_block_scales(model) as scales:
        model(torch.rand(1, 3, 64, 64))
    watch = TrainingWatch(log=type("Log", (), {"tensorboard": None})(), label_rms_bound=label_rms_bound("post_norm"))
    capsys.readouterr()
    watch.step(0, 0.7, scales)
    watch.step(50, 0.7, scales)
    watch.step(100, 5.0, {})
    lines = capsys.readouterr().out.splitlines() + capsys.readouterr().err.splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 2, lines  # once per kind, however often it happens
    assert "label tokens of stage 2 reached RMS" in warnings[0] and "--update" in warnings[0]
    assert "training loss reached 5 at step 100" in warnings[1]


def test_the_papers_update_warns_only_past_its_own_plateau(capsys):
    """The paper's update grows the label tokens to a plateau of a few thousand in healthy runs: no warning there,
    one past its bound; a bounded update warns far lower."""
    log = type("Log", (), {"tensorboard": None})()
    paper, bounded = TrainingWatch(log, label_rms_bound("paper")), TrainingWatch(log, label_rms_bound("stage_norm"))
    healthy_paper = {"2": [(4500.0, 1.0)]}
    paper.step(0, 0.7, healthy_paper)
    assert not capsys.readouterr().out
    bounded.step(0, 0.7, healthy_paper)
    assert "warning: the label tokens of stage 2 reached RMS 4500" in capsys.readouterr().out
    paper.step(50, 0.7, {"2": [(2 * PAPER_LABEL_RMS_WARN, 1.0)]})
    assert "warning: the label tokens of stage 2 reached RMS 20000" in capsys.readouterr().out
