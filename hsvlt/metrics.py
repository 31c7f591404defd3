"""Multi-label metrics as the field reports them (ML-GCN, Query2Label, HSVLT), all in percent.

- mAP: mean over classes of non-interpolated average precision (scikit-learn's average_precision_score:
  tied scores form one threshold step). Entries marked -1 (ignored, e.g. VOC "difficult") are left out of
  every metric. A class with no positive entry has no defined AP: `average_precisions` gives NaN for it,
  `evaluate_scores` None (JSON null), and it is left out of the mean.
- CP, CR, CF1 (per-class precision and recall averaged over classes, F1 of those averages) and OP, OR, OF1
  (counts pooled over all classes). A class with no predictions has precision 0; with no positives, recall 0.
- "top-3": an image's prediction is its 3 highest-scoring labels, each kept only if it also clears the
  threshold (the ML-GCN convention).
- AP by size: mAP per object-size bucket (small / medium / large), for datasets that know their objects'
  sizes (the generated shapes and fashion-mosaic); see `average_precision_by_size`.
"""

import numpy as np


def average_precisions(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class AP (fraction, NaN for classes without positives). scores, targets: N x C."""
    from sklearn.metrics import average_precision_score  # scikit-learn takes a second to import: not for `--help`

    aps = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        keep = targets[:, c] >= 0
        if (targets[keep, c] > 0).any():
            aps[c] = average_precision_score(targets[keep, c] > 0, scores[keep, c])
    return aps


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP (percent) of scores, targets N x C."""
    return mean_percent(average_precisions(scores, targets))


def mean_percent(aps: np.ndarray) -> float:
    """The mean (percent) of per-class APs over the classes that have one; NaN where none has."""
    return float(100.0 * np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")


def chosen_labels(scores: np.ndarray, thresholds: float | np.ndarray = 0.5, top_k: int | None = None) -> np.ndarray:
    """Boolean N x C: the labels each image is given, those whose score reaches the threshold (and, with top_k,
    among its top_k scores)."""
    predicted = scores >= np.asarray(thresholds)
    if top_k is not None and top_k < scores.shape[1]:
        rank = np.argsort(-scores, axis=1, kind="stable")
        in_top = np.zeros_like(predicted)
        np.put_along_axis(in_top, rank[:, :top_k], True, axis=1)
        predicted &= in_top
    return predicted


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def label_counts(predicted: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: (true positives, predictions, positives) of boolean predictions against 1/0/-1 targets."""
    valid = targets >= 0
    positive = (targets > 0) & valid
    predicted = predicted & valid
    return ((predicted & positive).sum(0).astype(float), predicted.sum(0).astype(float),
            positive.sum(0).astype(float))


def label_set_metrics(predicted: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 (percent) of boolean predictions against 1/0/-1 targets."""
    true_pos, n_pred, n_pos = label_counts(predicted, targets)
    cp = float(np.mean(true_pos / np.maximum(n_pred, 1)))
    cr = float(np.mean(true_pos / np.maximum(n_pos, 1)))
    op = float(true_pos.sum() / max(n_pred.sum(), 1))
    orc = float(true_pos.sum() / max(n_pos.sum(), 1))
    values = {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orc, "OF1": _f1(op, orc)}
    return {key: 100.0 * value for key, value in values.items()}


def evaluate_scores(
    scores: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray = 0.5, top_k: int = 3
) -> dict:
    """All figures: mAP, CP..OF1 at the threshold(s), the same for top-k, per-class AP, positives."""
    aps = average_precisions(scores, targets)
    result = {"mAP": mean_percent(aps)}
    result.update(label_set_metrics(chosen_labels(scores, thresholds), targets))
    result[f"top{top_k}"] = label_set_metrics(chosen_labels(scores, thresholds, top_k), targets)
    result["AP"] = [float(100.0 * ap) if np.isfinite(ap) else None for ap in aps]  # None: no positives
    result["num_images"] = int(scores.shape[0])
    result["positives"] = [int(n) for n in ((targets > 0).sum(0))]
    return result


def calibrate_thresholds(scores: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-class threshold with the best F1 on these scores (use validation data); `default` for a class
    without positives. The threshold sits halfway between the lowest score kept and the highest one below it,
    not on a score: a threshold equal to a validation score flips that image's label on a one-ulp difference
    (an exported model's rounding), and halfway keeps every validation decision the same."""
    from sklearn.metrics import precision_recall_curve

    thresholds = np.full(scores.shape[1], default)
    for c in range(scores.shape[1]):
        keep = targets[:, c] >= 0
        if not (targets[keep, c] > 0).any():
            continue
        column = scores[keep, c]
        precision, recall, cuts = precision_recall_curve(targets[keep, c] > 0, column)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        cut = float(cuts[np.argmax(f1)])
        below = column[column < cut]
        thresholds[c] = (cut + float(below.max())) / 2 if below.size else cut
    return thresholds


def average_precision_by_size(
    scores: np.ndarray, targets: np.ndarray, sizes: np.ndarray, edges: tuple[float, ...]
) -> np.ndarray:
    """mAP (percent) per object-size bucket: the scale-aware view of a detector-free classifier.

    sizes: N x C, the size of the object that makes (image, class) positive (NaN where unknown or absent).
    edges: increasing cut points; bucket b holds sizes in [edges[b-1], edges[b]), the first bucket starts at
    -inf and the last ends at +inf, so (0.24, 0.38) gives small / medium / large.
    For bucket b, the positives are the (image, class) pairs whose object falls in b; the other positives are
    ignored (neither positive nor negative), negatives stay negatives, -1 entries stay ignored. The bucket's
    mAP is the mean AP over the classes that have a positive in b; NaN when no class has one.
    """
    return np.array([bucket_average_precision(scores, targets, sizes, edges, b) for b in range(len(edges) + 1)])


def bucket_average_precision(scores: np.ndarray, targets: np.ndarray, sizes: np.ndarray, edges: tuple[float, ...],
                             bucket: int) -> float:
    """The mAP of one size bucket of average_precision_by_size (0: the smallest objects)."""
    buckets = np.digitize(np.nan_to_num(sizes, nan=np.inf), edges)  # N x C; NaN sizes are masked below
    in_bucket = (targets > 0) & np.isfinite(sizes) & (buckets == bucket)
    return mean_average_precision(scores, np.where((targets > 0) & ~in_bucket, -1.0, targets))


def size_bucket_edges(min_size: float, max_size: float, buckets: int = 3) -> tuple[float, ...]:
    """Cut points that split [min_size, max_size] into `buckets` equal ranges on a log scale."""
    return tuple(float(min_size * (max_size / min_size) ** (k / buckets)) for k in range(1, buckets))
