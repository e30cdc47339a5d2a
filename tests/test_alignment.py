"""The transform of paper 3.2.2 and its guard against degenerate cases."""
import numpy as np

from hairtryon.alignment import estimate_alignment, warp_image, warp_labels

FACE = np.array([[100, 40], [80, 80], [120, 80], [100, 150]], np.float64)  # forehead, eyes, chin


def test_perspective_maps_the_four_points_exactly():
    dst = FACE * 1.1 + [10, -5]
    dst[0] += [0, -2]  # a little projective difference (a slightly taller forehead)
    a = estimate_alignment(FACE, dst)
    assert a.kind == "perspective" and a.reason is None
    np.testing.assert_allclose(a.apply(FACE), dst, atol=1e-3)


def test_collinear_points_fall_back_to_similarity():
    line = np.array([[0, 0], [10, 10], [20, 20], [30, 30]], np.float64)
    a = estimate_alignment(line, FACE)
    assert a.kind == "similarity" and "collinear" in a.reason


def test_exploding_perspective_falls_back_to_similarity():
    dst = FACE.copy()
    dst[3] = [100, 95]  # chin pulled up almost to the eyes: a strong projective squeeze
    a = estimate_alignment(FACE, dst, region=(-200, -200, 400, 400))
    assert a.kind == "similarity" and a.reason
    m = a.matrix
    # a similarity: rotation+uniform scale, no projective row
    np.testing.assert_allclose(m[2], [0, 0, 1], atol=1e-12)
    assert abs(np.hypot(*m[0, :2]) - np.hypot(*m[1, :2])) < 1e-9


def test_warps_move_pixels_and_labels_together():
    img = np.zeros((64, 64, 3), np.uint8)
    img[10:20, 30:40] = 255
    labels = (img[..., 0] > 0).astype(np.uint8)
    shift = np.array([[1, 0, 5], [0, 1, 7], [0, 0, 1]], np.float64)
    wi, wl = warp_image(img, shift, (64, 64)), warp_labels(labels, shift, (64, 64))
    assert wi[17:27, 35:45].min() == 255 and wl[17:27, 35:45].all() and wl.sum() == labels.sum()
    assert set(np.unique(wl)) <= {0, 1}
