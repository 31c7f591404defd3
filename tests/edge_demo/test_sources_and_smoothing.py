"""hsvlt/deploy/sources.py (odd frames, the shapes stream) and hsvlt/deploy/smoothing.py (hysteresis)."""

import numpy as np
import pytest

from hsvlt.data.shapes import render_scene
from hsvlt.deploy.smoothing import LabelSmoother
from hsvlt.deploy.sources import ShapesSource, SourceError, as_bgr


@pytest.mark.parametrize("frame, expected", [
    (np.full((4, 6), 200, np.uint8), [200, 200, 200]),
    (np.full((4, 6, 1), 10, np.uint8), [10, 10, 10]),
    (np.dstack([np.full((4, 6, 3), 50, np.uint8), np.zeros((4, 6, 1), np.uint8)]), [50, 50, 50]),
    (np.full((4, 6), 65535, np.uint16), [255, 255, 255]),
    (np.full((4, 6, 3), 0.5, np.float32), [128, 128, 128]),
])
def test_odd_frames_become_bgr_uint8(frame, expected):
    bgr = as_bgr(frame, "test")
    assert bgr.shape == (4, 6, 3) and bgr.dtype == np.uint8
    assert bgr[0, 0].tolist() == expected


@pytest.mark.parametrize("frame, message", [
    (np.zeros((0, 5, 3), np.uint8), "no pixels"),
    (np.zeros((4, 6, 2), np.uint8), "2 channels"),
    (np.zeros((4, 6, 3), np.int64), "int64"),
])
def test_unusable_frames_are_one_line_errors(frame, message):
    with pytest.raises(SourceError, match=message):
        as_bgr(frame, "camera 0 frame 3")


def test_shapes_stream_draws_what_render_scene_draws_and_moves():
    source = ShapesSource(size=96, fps=10, scene_seconds=0.5)
    frames = [frame for frame, _ in zip(source, range(7))]
    for frame in frames[:5]:
        spec = source.scene(0).moved(frame.index / source.fps)
        np.testing.assert_array_equal(frame.image[..., ::-1], render_scene(spec, 96))
    assert not np.array_equal(frames[0].image, frames[1].image)  # objects move
    assert frames[5].truth != frames[4].truth  # scene 1 cuts in after 5 frames
    assert [f.index for f in frames] == list(range(7))


def test_hysteresis_keeps_a_label_that_hovers_around_its_threshold():
    smoother = LabelSmoother(np.array([0.5, 0.5]), smoothing=0.0, hysteresis=0.2)
    hovering = [0.55, 0.45, 0.52, 0.41, 0.3, 0.45, 0.49, 0.5]
    shown = [smoother.update(np.array([p, 0.9]))[0] for p in hovering]
    # on at 0.55; stays on while >= 0.4 (0.5 x 0.8); off at 0.3; back on only at 0.5
    assert shown == [True, True, True, True, False, False, False, True]


def test_smoothing_averages_over_time():
    smoother = LabelSmoother(np.array([0.5]), smoothing=0.75, hysteresis=0.0)
    assert not smoother.update(np.array([0.0]))[0]
    assert not smoother.update(np.array([1.0]))[0]  # 0.25: one bright frame is not enough
    smoother.update(np.array([1.0]))
    assert smoother.update(np.array([1.0]))[0]  # 0.578 after three
    np.testing.assert_allclose(smoother.probabilities, [1 - 0.75 ** 3], rtol=1e-6)


def test_bad_smoothing_settings_are_refused():
    with pytest.raises(ValueError, match="--smoothing"):
        LabelSmoother(np.array([0.5]), smoothing=1.0)
