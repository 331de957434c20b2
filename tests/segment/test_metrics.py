"""Dice / IoU (thresholded and soft) against hand-computed values and plain-loop references."""

import numpy as np
import pytest

from fewshot_jax.segment import metrics


def loop_scores(prob, true, threshold=0.5, smooth=1e-6):
    """Reference: per-pixel loops over one image."""
    tp = fp = fn = 0
    inter = sum_p = sum_t = 0.0
    for y in range(true.shape[0]):
        for x in range(true.shape[1]):
            p, t = float(prob[y, x]), bool(true[y, x])
            hit = p >= threshold
            tp += hit and t
            fp += hit and not t
            fn += (not hit) and t
            inter += p * t
            sum_p += p
            sum_t += t
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    iou = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
    soft_dice = (2 * inter + smooth) / (sum_p + sum_t + smooth)
    soft_iou = (inter + smooth) / (sum_p + sum_t - inter + smooth)
    return dice, iou, soft_dice, soft_iou


def test_hand_computed_small_masks():
    true = np.array([[1, 1, 0], [0, 0, 0]], np.uint8)
    pred = np.array([[1, 0, 1], [0, 0, 0]], np.uint8)
    # TP = 1, FP = 1, FN = 1.
    assert float(metrics.dice(pred, true)) == pytest.approx(2 / 4)
    assert float(metrics.iou(pred, true)) == pytest.approx(1 / 3)
    prob = np.array([[0.9, 0.2, 0.6], [0.0, 0.1, 0.0]], np.float32)
    # Thresholded at 0.5 this is the same prediction as `pred`.
    assert float(metrics.dice(prob, true)) == pytest.approx(0.5)
    # Σp·t = 1.1, Σp = 1.8, Σt = 2.
    assert float(metrics.soft_dice(prob, true)) == pytest.approx(2.2 / 3.8, rel=1e-5)
    assert float(metrics.soft_iou(prob, true)) == pytest.approx(1.1 / 2.7, rel=1e-5)
    assert float(metrics.dice(true, true)) == 1.0 and float(metrics.iou(true, true)) == 1.0


def test_threshold_is_inclusive_and_configurable():
    true = np.array([[1, 0]], np.uint8)
    prob = np.array([[0.5, 0.3]], np.float32)
    assert float(metrics.dice(prob, true)) == 1.0  # 0.5 >= 0.5 is foreground
    assert float(metrics.dice(prob, true, threshold=0.6)) == 0.0
    assert float(metrics.dice(prob, true, threshold=0.2)) == pytest.approx(2 / 3)


def test_empty_mask_conventions():
    empty = np.zeros((4, 4), np.uint8)
    full = np.ones((4, 4), np.uint8)
    # Both empty: a perfect answer.
    for fn in (metrics.dice, metrics.iou, metrics.soft_dice, metrics.soft_iou):
        assert float(fn(empty.astype(np.float32), empty)) == pytest.approx(1.0)
    # Only one empty: 0 (soft: ~0 because of the smoothing term).
    assert float(metrics.dice(empty, full)) == 0.0 and float(metrics.iou(full, empty)) == 0.0
    assert float(metrics.soft_dice(empty.astype(np.float32), full)) < 1e-6
    assert float(metrics.soft_iou(full.astype(np.float32), empty)) < 1e-6


def test_batches_match_the_plain_loop_reference():
    rng = np.random.default_rng(0)
    prob = rng.random((6, 7, 9)).astype(np.float32)
    true = (rng.random((6, 7, 9)) < 0.3).astype(np.uint8)
    true[2] = 0  # an empty truth in the batch
    prob[3] = 0.0  # an empty prediction
    got = np.stack(
        [
            np.asarray(fn(prob, true))
            for fn in (metrics.dice, metrics.iou, metrics.soft_dice, metrics.soft_iou)
        ],
        1,
    )
    expected = np.array([loop_scores(p, t) for p, t in zip(prob, true, strict=True)])
    assert got.shape == (6, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(metrics.MetricInputError, match=r'\(4, 4\) differs .*\(4, 5\)'):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(metrics.MetricInputError, match='expected'):
        metrics.soft_dice(np.zeros(3), np.zeros(3))


def test_losses_against_direct_formulas():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 5)).astype(np.float32) * 3
    true = (rng.random((3, 5, 5)) < 0.4).astype(np.uint8)
    prob = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected_dice = 1 - np.mean([loop_scores(p, t)[2] for p, t in zip(prob, true, strict=True)])
    assert float(metrics.dice_loss(prob.astype(np.float32), true)) == pytest.approx(expected_dice, rel=1e-5)
    expected_bce = -np.mean(true * np.log(prob) + (1 - true) * np.log(1 - prob))
    assert float(metrics.bce_loss(logits, true)) == pytest.approx(expected_bce, rel=1e-5)
    # Large logits stay finite.
    assert np.isfinite(float(metrics.bce_loss(np.array([80.0, -80.0]), np.array([0, 1]))))


def test_per_class_scores_each_class_as_binary():
    labels = np.array([[0, 1, 2], [2, 2, 0]])
    prob = np.eye(3, dtype=np.float32)[np.array([[0, 1, 1], [2, 2, 0]])]  # one pixel wrong
    scores = np.asarray(metrics.per_class(metrics.dice, prob, labels, 3))
    # class 0: perfect; class 1: pred 2 px, true 1 px, TP 1 → 2/3; class 2: TP 2, FN 1 → 4/5.
    np.testing.assert_allclose(scores, [1.0, 2 / 3, 4 / 5], rtol=1e-6)
    with pytest.raises(metrics.MetricInputError):
        metrics.per_class(metrics.dice, prob[..., :2], labels, 3)
