"""Held-out TEM benchmark families, independent of the synthetic generator (docs/heldout.md).

Write a family to disk with
`python -m fewshot_jax.data.heldout.write --family=NAME --out=DIR`.
"""

from fewshot_jax.data.heldout.families import (
    FAMILIES,
    Family,
    labeled_image,
    render,
    unlabeled_image,
)
from fewshot_jax.data.heldout.optics import (
    MATERIALS,
    Detector,
    Material,
    Optics,
    ctf,
    form_image,
    interaction_constant,
    wavelength_nm,
)

__all__ = [
    'FAMILIES',
    'MATERIALS',
    'Detector',
    'Family',
    'Material',
    'Optics',
    'ctf',
    'form_image',
    'interaction_constant',
    'labeled_image',
    'render',
    'unlabeled_image',
    'wavelength_nm',
]
