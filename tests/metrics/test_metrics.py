import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from hsvlt.metrics import average_precisions, calibrate_thresholds, chosen_labels, evaluate_scores, label_set_metrics


def random_case(seed: int = 0, images: int = 60, classes: int = 6):
    rng = np.random.default_rng(seed)
    targets = (rng.random((images, classes)) < 0.3).astype(np.float32)
    scores = np.clip(0.35 * targets + 0.65 * rng.random((images, classes)), 0, 1)
    return scores, targets


def test_average_precision_matches_scikit_learn_with_ties_and_ignored_entries():
    scores, targets = random_case()
    scores = np.round(scores, 1)  # many tied scores
    targets[:7, 2] = -1  # ignored entries (VOC "difficult")
    aps = average_precisions(scores, targets)
    for c in range(scores.shape[1]):
        keep = targets[:, c] >= 0
        expected = average_precision_score(targets[keep, c], scores[keep, c])
        assert aps[c] == pytest.approx(expected)
    assert evaluate_scores(scores, targets)["mAP"] == pytest.approx(100 * aps.mean())


def test_ignored_entries_change_nothing_but_themselves():
    scores, targets = random_case(1)
    with_ignored = targets.copy()
    with_ignored[0, 0] = -1
    scores_changed = scores.copy()
    scores_changed[0, 0] = 1.0 - scores[0, 0]  # whatever the model says about an ignored entry
    a = evaluate_scores(scores, with_ignored)
    b = evaluate_scores(scores_changed, with_ignored)
    assert a["mAP"] == b["mAP"] and a["CF1"] == b["CF1"] and a["OF1"] == b["OF1"]


def test_a_class_without_positives_has_no_ap_and_is_left_out_of_the_mean():
    scores, targets = random_case(2)
    targets[:, 3] = 0
    result = evaluate_scores(scores, targets)
    assert result["AP"][3] is None and result["positives"][3] == 0
    defined = [ap for ap in result["AP"] if ap is not None]
    assert result["mAP"] == pytest.approx(np.mean(defined))


def test_label_set_metrics_on_a_hand_computed_case():
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, -1]], dtype=np.float32)
    predicted = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]], dtype=bool)
    m = label_set_metrics(predicted, targets)
    # per class: c0 tp1 pred1 pos2; c1 tp2 pred3 pos2; c2 tp0 pred0 (ignored one dropped) pos1
    assert m["CP"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert m["CR"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)
    assert m["OP"] == pytest.approx(100 * 3 / 4)
    assert m["OR"] == pytest.approx(100 * 3 / 5)
    assert m["OF1"] == pytest.approx(2 * 75 * 60 / 135)


def test_top_k_keeps_at_most_k_labels_that_also_clear_the_threshold():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1], [0.2, 0.3, 0.1, 0.95, 0.4]])
    chosen = chosen_labels(scores, 0.5, top_k=3)
    assert chosen.tolist() == [[True, True, True, False, False], [False, False, False, True, False]]


def test_calibrated_thresholds_give_the_best_f1_per_class():
    scores, targets = random_case(3, images=200)
    thresholds = calibrate_thresholds(scores, targets)
    for c in range(scores.shape[1]):
        def f1(t):
            predicted, positive = scores[:, c] >= t, targets[:, c] > 0
            tp = (predicted & positive).sum()
            return 2 * tp / max(predicted.sum() + positive.sum(), 1)
        assert f1(thresholds[c]) >= max(f1(t) for t in np.unique(scores[:, c])) - 1e-9
