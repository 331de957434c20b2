"""Segmentation scores: Dice and IoU, thresholded and soft, per image.

Definitions (paper eqns 1 and 2; TP, FP, FN count pixels of one image):

* ``dice = 2 TP / (2 TP + FP + FN)`` and ``iou = TP / (TP + FP + FN)`` on binary
  masks; a probability map is thresholded first (``prob >= threshold``, 0.5 by
  default). **Empty-mask convention:** when neither the prediction nor the truth
  has a foreground pixel the score is 1 (a perfect answer to an empty image); when
  only one of them is empty it is 0.
* ``soft_dice = (2 Σ p·t + s) / (Σ p + Σ t + s)`` and
  ``soft_iou = (Σ p·t + s) / (Σ p + Σ t − Σ p·t + s)`` on probabilities ``p``,
  with ``s = 1e-6`` (what the original notebooks reported and trained on). Both
  empty gives (0 + s) / (0 + s) = 1, matching the thresholded convention; one
  empty gives ≈ 0.

Every function reduces the last two axes (H, W) and keeps any leading axes, so a
batch ``(N, H, W)`` gives ``(N,)`` scores. Multi-class maps ``(…, H, W, C)`` are
scored per class with :func:`per_class` (one binary map per channel). The
functions use ``jax.numpy``: they run on numpy or JAX arrays, inside or outside
``jit``, and the loss (``dice_loss``) is the same soft Dice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SMOOTH = 1e-6
THRESHOLD = 0.5

__all__ = [
    'SMOOTH',
    'THRESHOLD',
    'dice',
    'iou',
    'soft_dice',
    'soft_iou',
    'confusion',
    'dice_loss',
    'bce_loss',
    'per_class',
]


class MetricInputError(ValueError):
    """Arrays that cannot be scored against each other."""


def _check_shapes(pred, true, name: str) -> None:
    if jnp.shape(pred) != jnp.shape(true):
        raise MetricInputError(
            f'{name}: prediction shape {jnp.shape(pred)} differs from the '
            f'true mask shape {jnp.shape(true)}; expected equal (…, H, W)'
        )
    if jnp.ndim(pred) < 2:
        raise MetricInputError(f'{name}: arrays of shape {jnp.shape(pred)}; expected (…, H, W)')


def confusion(pred, true, threshold: float = THRESHOLD):
    """Per-image (TP, FP, FN) pixel counts.

    Args:
        pred: predicted probabilities or a binary mask, (…, H, W).
        true: true binary mask (bool, {0, 1}), same shape.
        threshold: a pixel is predicted foreground when ``pred >= threshold``.

    Returns:
        ``(tp, fp, fn)``, float32 arrays of shape (…,).
    """
    _check_shapes(pred, true, 'confusion')
    p = jnp.asarray(pred) >= threshold
    t = jnp.asarray(true) > 0.5
    axes = (-2, -1)
    tp = jnp.sum(p & t, axis=axes, dtype=jnp.float32)
    fp = jnp.sum(p & ~t, axis=axes, dtype=jnp.float32)
    fn = jnp.sum(~p & t, axis=axes, dtype=jnp.float32)
    return tp, fp, fn


def dice(pred, true, threshold: float = THRESHOLD):
    """Dice of the thresholded prediction, per image; 1 when both masks are empty.

    Args:
        pred: probabilities or a binary mask, (…, H, W).
        true: true binary mask, same shape.
        threshold: foreground where ``pred >= threshold``.

    Returns:
        float32 (…,) scores in [0, 1].
    """
    tp, fp, fn = confusion(pred, true, threshold)
    denominator = 2 * tp + fp + fn
    return jnp.where(denominator > 0, 2 * tp / jnp.maximum(denominator, 1), 1.0)


def iou(pred, true, threshold: float = THRESHOLD):
    """Intersection over union of the thresholded prediction, per image; 1 when both are empty.

    Args:
        pred: probabilities or a binary mask, (…, H, W).
        true: true binary mask, same shape.
        threshold: foreground where ``pred >= threshold``.

    Returns:
        float32 (…,) scores in [0, 1].
    """
    tp, fp, fn = confusion(pred, true, threshold)
    denominator = tp + fp + fn
    return jnp.where(denominator > 0, tp / jnp.maximum(denominator, 1), 1.0)


def _soft_sums(prob, true, name):
    _check_shapes(prob, true, name)
    p = jnp.asarray(prob, jnp.float32)
    t = jnp.asarray(true).astype(jnp.float32)
    axes = (-2, -1)
    return jnp.sum(p * t, axis=axes), jnp.sum(p, axis=axes), jnp.sum(t, axis=axes)


def soft_dice(prob, true, smooth: float = SMOOTH):
    """Soft Dice ``(2 Σ p·t + s) / (Σ p + Σ t + s)`` per image.

    Args:
        prob: probabilities in [0, 1], (…, H, W).
        true: true binary mask, same shape.
        smooth: ``s``, keeps empty images finite (both empty → 1).

    Returns:
        float32 (…,) scores.
    """
    inter, sum_p, sum_t = _soft_sums(prob, true, 'soft_dice')
    return (2 * inter + smooth) / (sum_p + sum_t + smooth)


def soft_iou(prob, true, smooth: float = SMOOTH):
    """Soft IoU ``(Σ p·t + s) / (Σ p + Σ t − Σ p·t + s)`` per image.

    Args:
        prob: probabilities in [0, 1], (…, H, W).
        true: true binary mask, same shape.
        smooth: ``s`` (both empty → 1).

    Returns:
        float32 (…,) scores.
    """
    inter, sum_p, sum_t = _soft_sums(prob, true, 'soft_iou')
    return (inter + smooth) / (sum_p + sum_t - inter + smooth)


def per_class(metric, prob, labels, num_classes: int, **kwargs):
    """Scores each class of a multi-class map as a binary problem.

    Args:
        metric: one of the functions above.
        prob: class probabilities (…, H, W, C).
        labels: integer class map (…, H, W) with values in [0, C).
        num_classes: C.
        **kwargs: passed to ``metric``.

    Returns:
        float32 (…, C) scores.
    """
    if jnp.shape(prob)[-1] != num_classes or jnp.shape(prob)[:-1] != jnp.shape(labels):
        raise MetricInputError(
            f'per_class: probabilities {jnp.shape(prob)} and labels '
            f'{jnp.shape(labels)}; expected (…, H, W, {num_classes}) and '
            f'(…, H, W)'
        )
    onehot = jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float32)
    move = lambda x: jnp.moveaxis(x, -1, -3)  # noqa: E731 - (…, H, W, C) → (…, C, H, W)
    return metric(move(jnp.asarray(prob)), move(onehot), **kwargs)


def dice_loss(prob, true, smooth: float = SMOOTH):
    """``1 − soft Dice``, averaged over the images (and classes) of a batch: the paper's loss.

    Args:
        prob: probabilities, (N, H, W) for one class or (N, H, W, C) with ``true`` one-hot.
        true: targets of the same shape (binary mask, or one-hot classes).
        smooth: ``s`` of the soft Dice.
    """
    if jnp.ndim(prob) == 4:
        prob, true = jnp.moveaxis(prob, -1, 1), jnp.moveaxis(true, -1, 1)
    return 1.0 - jnp.mean(soft_dice(prob, true, smooth))


def bce_loss(logits, true):
    """Mean binary cross-entropy of sigmoid ``logits`` against a binary mask (numerically stable).

    Args:
        logits: pre-sigmoid scores, any shape.
        true: {0, 1} targets of the same shape.
    """
    t = jnp.asarray(true, jnp.float32)
    logits = jnp.asarray(logits, jnp.float32)
    # log(1 + e^-|x|) + max(x, 0) - x t  ==  -t log σ(x) - (1 - t) log(1 - σ(x))
    return jnp.mean(jnp.maximum(logits, 0) - logits * t + jnp.log1p(jnp.exp(-jnp.abs(logits))))
