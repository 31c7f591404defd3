"""mAP of an exported model, computed through its real runtime: the number users care about after export.

    python export/evaluate_artifact.py --model model.pte                # ExecuTorch runtime
    python export/evaluate_artifact.py --model model.onnx               # ONNX Runtime
    python export/evaluate_artifact.py --model runs/hsvlt/best.pt       # PyTorch, for comparison

The validation set is the one the source checkpoint was validated on (recorded in the manifest beside the
file), unless --data / --root say otherwise; images go through hsvlt.preprocess.prepare_image, as in training
and in the demo. Prints mAP, CP..OF1 at the manifest's per-class thresholds and at 0.5, and the throughput.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

from hsvlt.cli import positive_int, program
from hsvlt.data import dataset_argument
from hsvlt.data.base import FirstSamples
from hsvlt.data.loader import eval_loader
from hsvlt.data.transforms import eval_transform
from hsvlt.evaluate import checkpoint_data, format_report, score_loader
from hsvlt.metrics import evaluate_scores
from hsvlt.outputs import check_output_file, write_json


def validation_set(model, data: str | None = None, root: str | None = None, val_size: int | None = None):
    """(name, dataset) of the validation set the manifest's checkpoint was validated on
    (hsvlt.evaluate.checkpoint_data), or of `data` / `root`, for a model opened by hsvlt.deploy.runtimes."""
    name, bundle = checkpoint_data(model.manifest, model.path, model.input_size, data, root, val_size)
    return name, bundle.val


@dataclass
class EvaluateArtifactConfig:
    """One evaluation of an exported model, as `python export/evaluate_artifact.py` takes it (its flags parse into
    one, `parse_args`); tools call `evaluate` with a model opened by hsvlt.deploy.runtimes instead."""

    model: Path
    data: str | None = None  # None: the source checkpoint's dataset
    root: str | None = None  # None: the source checkpoint's dataset folder
    val_size: int | None = None
    limit: int | None = None  # the first N validation images only
    batch_size: int = 16
    threads: int | None = None  # None: the runtime's choice
    json: Path | None = None


def evaluate(model, dataset, batch_size: int = EvaluateArtifactConfig.batch_size, limit: int | None = None) -> dict:
    """Run `model` (hsvlt.deploy.runtimes.Model) over `dataset` through hsvlt.evaluate.score_loader, on the
    deployed preprocessing; figures at its thresholds and at 0.5."""
    if limit is not None:
        dataset = FirstSamples(dataset, limit)
    loader = eval_loader(dataset, eval_transform(model.input_size), batch_size, workers=0)
    scored = score_loader(model, loader, desc=f"{model.runtime} evaluate")
    scores, targets = scored.scores, scored.targets
    return {"at_thresholds": evaluate_scores(scores, targets, model.thresholds),
            "at_0.5": evaluate_scores(scores, targets, 0.5),
            "images_per_s": len(scores) / max(scored.model_seconds, 1e-9),
            "skipped": [reason for _, reason in scored.skipped]}


def parse_args(argv=None) -> EvaluateArtifactConfig:
    defaults = EvaluateArtifactConfig(model=Path())
    parser = argparse.ArgumentParser(prog=program("python export/evaluate_artifact.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help=".pte, .onnx or checkpoint (.pt)")
    parser.add_argument("--data", type=dataset_argument, help="dataset (default: the source checkpoint's)")
    parser.add_argument("--root", help="dataset folder (default: the source checkpoint's)")
    parser.add_argument("--val-size", type=positive_int, help="generated datasets: number of validation scenes")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N validation images only")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help="images per runtime call")
    parser.add_argument("--threads", type=positive_int, help="runtime CPU threads (default: the runtime's choice)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return EvaluateArtifactConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    from hsvlt.deploy.runtimes import open_model

    config = parse_args(argv)
    if config.json is not None:
        check_output_file(config.json, ".json")
    model = open_model(config.model, config.threads)
    name, dataset = validation_set(model, config.data, config.root, config.val_size)
    result = evaluate(model, dataset, config.batch_size, config.limit)
    title = (f"{config.model.name} ({model.runtime}, {model.manifest.get('precision', 'fp32')}) on {name} validation "
             f"({result['at_thresholds']['num_images']} images)")
    print(format_report(result["at_0.5"], title=title + ", threshold 0.5"))
    print(format_report(result["at_thresholds"], title="at the manifest's per-class thresholds"))
    print(f"{result['images_per_s']:.1f} images/s")
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} unreadable images (first: {result['skipped'][0]})")
    if config.json:
        write_json(config.json, {key: result[key] for key in ("at_thresholds", "at_0.5", "images_per_s")})
    return result
