"""The settings ``segment.fit`` takes from its recipe."""

import pytest

from fewshot_jax.segment import SegmentConfigError


def test_fit_defaults_to_the_small_data_recipe_and_keeps_the_paper_one():
    from fewshot_jax.segment import recipe_settings, recipe_steps

    small = recipe_settings('small-data')
    assert (small['decoder'], small['lr'], small['lr_schedule'], small['augment']) == (
        'unet',
        3e-3,
        'cosine',
        True,
    )
    # Four masks: 60 epochs are 60 steps in batches of 4; the small-data recipe keeps 400.
    assert recipe_steps(small, 4, 4) == 400
    assert recipe_steps(small, 40, 4) == 600
    paper = recipe_settings('paper')
    assert (paper['decoder'], paper['lr'], paper['lr_schedule'], paper['augment']) == (
        'paper',
        1e-3,
        'constant',
        False,
    )
    assert recipe_steps(paper, 4, 4) == 60
    assert recipe_settings('paper', decoder='unet', lr=None)['decoder'] == 'unet'
    assert recipe_settings('paper', lr=None)['lr'] == 1e-3
    with pytest.raises(SegmentConfigError, match="recipe='fast'"):
        recipe_settings('fast')


def _tiny_set():
    import numpy as np

    from fewshot_jax.data import synthetic

    data = synthetic.nanowires(2, 64, seed=0)
    keep = np.isin(data.labels, [1, 2])
    return data.images[keep], data.masks[keep]


def test_fit_with_a_spec_trains_as_the_same_keywords_do():
    import numpy as np

    from fewshot_jax.segment import TrainSpec, fit, random_encoder

    images, masks = _tiny_set()
    encoder = random_encoder({'depth': 18, 'width': 4}, seed=0)
    keywords = {'steps': 2, 'decoder': 'unet', 'lr': 3e-3, 'lr_schedule': 'cosine', 'augment': True}
    by_keywords = fit(encoder, images, masks, progress=False, **keywords)
    # A spec at other values, then the same keywords as overrides: the overrides win.
    spec = TrainSpec(resolution=64, steps=50, decoder='paper', lr=1e-3)
    by_spec = fit(encoder, images, masks, spec, progress=False, **keywords)
    assert by_spec.info['steps'] == by_keywords.info['steps'] == 2
    np.testing.assert_array_equal(by_spec.predict(images), by_keywords.predict(images))


def test_fit_names_a_keyword_that_is_not_a_setting_and_a_spec_with_a_recipe():
    from fewshot_jax.segment import TrainSpec, fit, random_encoder

    images, masks = _tiny_set()
    encoder = random_encoder({'depth': 18, 'width': 4}, seed=0)
    with pytest.raises(SegmentConfigError, match=r'fit\(learning_rate=...\): not a training setting'):
        fit(encoder, images, masks, learning_rate=1e-3)
    with pytest.raises(SegmentConfigError, match="recipe='paper' with a spec"):
        fit(encoder, images, masks, TrainSpec(resolution=64, steps=1), recipe='paper')
    with pytest.raises(SegmentConfigError, match='pixel_scale'):
        fit(encoder, images, masks, pixel_scale=2.0)
