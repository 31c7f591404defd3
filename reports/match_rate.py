"""How often the demo's detections match what is really in view, on the generated `shapes` stream.

    python reports/match_rate.py --model model_int8.pte --frames 900 --out runs/match_rate

It runs `edge_demo/camera.py --source shapes --headless` (the demo itself: same preprocessing, runtime,
smoothing) and compares every frame's labels with the objects the stream drew:
    exact match    the frame's label set equals the set of objects in view
    precision, recall, F1 per label and over all labels (micro)
    pointing       of the correctly shown labels, how often the attention peak falls on the object
                   (within its diameter / 2 of its centre); needs a model exported with --attention-stage
for the raw per-frame detections (probability >= threshold) and for the labels shown after smoothing. Scenes
cut every 3 s of stream time; the smoothed labels lag a few frames behind a cut, as they would on a camera.
Writes match_rate.json and match_rate.png (precision and recall per label) into --out.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsvlt.cli import attention_stage, positive_int
from hsvlt.deploy import camera
from hsvlt.metrics import label_counts, label_set_metrics
from hsvlt.outputs import save_figure, write_json


@dataclass
class MatchRateConfig:
    """One measurement, as `python reports/match_rate.py` takes it (its flags parse into one, `parse_args`)."""

    model: Path  # trained on shapes: .pte, .onnx or checkpoint (.pt)
    frames: int = 900  # 90 per scene
    seed: int = 0  # which scenes the stream shows
    threads: int = 1
    attention_stage: int | None = None  # checkpoints: the stage whose attention is checked for pointing
    out: Path = Path("runs/match_rate")


def read_records(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def label_scores(records: list[dict], labels: list[str], key: str) -> dict:
    """Exact-match rate, micro precision / recall / F1 (hsvlt.metrics' OP, OR, OF1) and per-label precision /
    recall of record[key], as fractions."""
    truth = np.array([[label in {o["label"] for o in r["truth"]} for label in labels] for r in records])
    predicted = np.array([[label in set(r[key]) for label in labels] for r in records])
    overall = label_set_metrics(predicted, truth.astype(float))
    hits, shown, in_view = label_counts(predicted, truth.astype(float))
    precision, recall = hits / np.maximum(shown, 1), hits / np.maximum(in_view, 1)
    return {"exact_match": float((truth == predicted).all(axis=1).mean()),
            "precision": overall["OP"] / 100, "recall": overall["OR"] / 100, "f1": overall["OF1"] / 100,
            "per_label": {label: {"precision": float(p), "recall": float(r), "frames_in_view": int(n)}
                          for label, p, r, n in zip(labels, precision, recall, in_view)}}


def pointing(records: list[dict]) -> dict | None:
    """Of the labels shown that are really in view, the fraction whose attention peak lies on the object."""
    if not any("where" in r for r in records):
        return None
    on_object = total = 0
    for record in records:
        objects = {o["label"]: o for o in record["truth"]}
        for label, (x, y) in record.get("where", {}).items():
            if label in objects:
                o = objects[label]
                total += 1
                on_object += np.hypot(x - o["x"], y - o["y"]) <= o["size"] / 2
    return {"labels_checked": total, "on_object": float(on_object / total) if total else float("nan")}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_label = result["shown"]["per_label"]
    labels = list(per_label)
    x = np.arange(len(labels))
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(labels)), 4))
    axis.bar(x - 0.2, [per_label[k]["precision"] for k in labels], 0.4, label="precision")
    axis.bar(x + 0.2, [per_label[k]["recall"] for k in labels], 0.4, label="recall")
    axis.set_xticks(x, labels, rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_title(f"{result['model']} on {result['frames']} shapes frames: exact match "
                   f"{100 * result['shown']['exact_match']:.1f}% (shown labels)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


def format_result(result: dict) -> str:
    lines = [f"{result['model']} on {result['frames']} frames of the shapes stream (seed {result['seed']})",
             f"{'labels':<22}{'exact match':>12}{'precision':>11}{'recall':>8}{'F1':>7}"]
    for key, name in (("detected", "per frame (raw)"), ("shown", "shown (smoothed)")):
        r = result[key]
        lines.append(f"{name:<22}{100 * r['exact_match']:>11.1f}%{100 * r['precision']:>10.1f}%"
                     f"{100 * r['recall']:>7.1f}%{100 * r['f1']:>6.1f}%")
    if result["pointing"] is not None:
        p = result["pointing"]
        lines.append(f"attention peak on the object: {100 * p['on_object']:.1f}% of {p['labels_checked']} "
                     f"correctly shown labels")
    return "\n".join(lines)


def parse_args(argv=None) -> MatchRateConfig:
    defaults = MatchRateConfig(model=Path())
    parser = argparse.ArgumentParser(prog="python reports/match_rate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="a model trained on shapes: .pte, .onnx or checkpoint (.pt)")
    parser.add_argument("--frames", type=positive_int, default=defaults.frames,
                        help="frames of the stream (90 per scene)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="which scenes the stream shows")
    parser.add_argument("--threads", type=positive_int, default=defaults.threads, help="CPU threads of the runtime")
    parser.add_argument("--attention-stage", type=attention_stage, default=defaults.attention_stage,
                        help="checkpoints: stage whose attention is checked for pointing (0-3)")
    parser.add_argument("--out", type=Path, default=defaults.out,
                        help="folder for detections.jsonl, annotated.mp4, match_rate.json and match_rate.png")
    return MatchRateConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> dict:
    config = parse_args(argv)
    summary = camera.run(camera.DemoConfig(model=config.model, source="shapes", headless=True,
                                           max_frames=config.frames, seed=config.seed, threads=config.threads,
                                           out=config.out, attention_stage=config.attention_stage))
    records = read_records(config.out / "detections.jsonl")
    labels = list(records[0]["probabilities"])
    unknown = {o["label"] for r in records for o in r["truth"]} - set(labels)
    if unknown:
        raise SystemExit(f"error: {config.model}: its labels lack {', '.join(sorted(unknown))}; "
                         f"use a model trained on shapes")
    result = {"model": config.model.name, "frames": len(records), "seed": config.seed,
              "detected": label_scores(records, labels, "detected"), "shown": label_scores(records, labels, "shown"),
              "pointing": pointing(records), "demo": summary}
    write_json(config.out / "match_rate.json", result)
    plot(result, config.out / "match_rate.png")
    print(format_result(result))
    print(f"wrote {config.out / 'match_rate.json'} and {config.out / 'match_rate.png'}")
    return result


if __name__ == "__main__":
    main()
