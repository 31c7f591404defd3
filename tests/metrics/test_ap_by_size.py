"""AP by object size bucket, against a case computed by hand."""

import numpy as np
import pytest

from hsvlt.metrics import average_precision_by_size, bucket_average_precision, size_bucket_edges

NAN = np.nan
# 5 images, 2 classes. Class 0: positives of size 0.1, 0.5 and 0.2; class 1: one positive of size 0.1, one
# ignored entry (-1) and one positive of unknown size (NaN), which no bucket counts.
SCORES = np.array([[0.9, 0.2], [0.3, 0.6], [0.8, 0.9], [0.1, 0.7], [0.4, 0.1]])
TARGETS = np.array([[1, 0], [1, 1], [0, -1], [0, 0], [1, 1]], dtype=float)
SIZES = np.array([[0.1, NAN], [0.5, 0.1], [NAN, NAN], [NAN, NAN], [0.2, NAN]])


def test_hand_computed_buckets():
    small, medium, large = average_precision_by_size(SCORES, TARGETS, SIZES, edges=(0.3, 0.45))
    # small, class 0: positives 0.9 and 0.4 (the large one ignored), negatives 0.8 and 0.1:
    #   ranking P N P N -> AP = (1/1 + 2/3) / 2 = 5/6
    # small, class 1: positive 0.6, negatives 0.2 and 0.7 (0.9 is ignored, 0.1 has no size) -> ranking N P -> 1/2
    assert small == pytest.approx(100 * (5 / 6 + 1 / 2) / 2)
    assert np.isnan(medium)  # no positive in [0.3, 0.45)
    # large, class 0 only: positive 0.3, negatives 0.8 and 0.1 -> ranking N P N -> 1/2; class 1 has none
    assert large == pytest.approx(50.0)
    # one bucket alone (what the study's bootstrap resamples) is the same number
    assert bucket_average_precision(SCORES, TARGETS, SIZES, (0.3, 0.45), 0) == small


def test_one_bucket_holding_every_size_is_the_plain_map_of_the_sized_positives():
    from hsvlt.metrics import average_precisions

    known = np.where((TARGETS > 0) & np.isnan(SIZES), -1, TARGETS)
    (everything,) = average_precision_by_size(SCORES, TARGETS, SIZES, edges=())
    assert everything == pytest.approx(100 * np.nanmean(average_precisions(SCORES, known)))


def test_log_equal_bucket_edges():
    edges = size_bucket_edges(0.15, 0.60)
    assert edges == pytest.approx((0.15 * 4 ** (1 / 3), 0.15 * 4 ** (2 / 3)))
    assert edges[0] / 0.15 == pytest.approx(edges[1] / edges[0]) == pytest.approx(0.60 / edges[1])
