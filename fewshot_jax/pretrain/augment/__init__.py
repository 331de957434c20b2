"""Per-example, per-view augmentations on device: the settings (``config``), photometric ops
(``photometric``) and the two-view pipeline (``views``)."""

from fewshot_jax.pretrain.augment.config import (
    CROP_MODES,
    AugmentConfig,
    AugmentConfigError,
    AugmentInputError,
    augment_config_from,
)
from fewshot_jax.pretrain.augment.photometric import (
    adjust_gamma,
    color_jitter,
    gaussian_blur,
    lower_dose,
    micrograph_ops,
    noise_level,
)
from fewshot_jax.pretrain.augment.views import (
    area_crop_window,
    augment_batch,
    augment_image,
    crop_resize,
    crop_window,
    resize_batch,
    two_views,
)

__all__ = [
    'CROP_MODES',
    'AugmentConfig',
    'AugmentConfigError',
    'AugmentInputError',
    'adjust_gamma',
    'area_crop_window',
    'augment_batch',
    'augment_config_from',
    'augment_image',
    'color_jitter',
    'crop_resize',
    'crop_window',
    'gaussian_blur',
    'lower_dose',
    'micrograph_ops',
    'noise_level',
    'resize_batch',
    'two_views',
]
