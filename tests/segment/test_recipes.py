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
