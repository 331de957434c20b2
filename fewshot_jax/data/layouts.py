"""The published dataset layouts of the paper, as sources (docs/datasets.md has the trees).

Nothing here downloads: each function takes the root of a local copy.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from fewshot_jax.data.groups import rotation_groups
from fewshot_jax.data.io import IMAGE_EXTENSIONS, MaskEncoding
from fewshot_jax.data.sources import (
    ClassFolderSource,
    MaskedImageSource,
    UnlabeledFolderSource,
    _class_folders,
    _existing_folder,
)

NANOWIRE_CLASSES = ('bundle', 'dispersed', 'network', 'singular')
NANOWIRE_MASKED_CLASSES = ('dispersed', 'network')
MNP_CLASSES = ('dispersed', 'percolating_cluster', 'separate_clusters')
VIRUS_SPLITS = ('train', 'validation', 'test')
_JPEG = ('.jpg', '.jpeg')


def nanowire_morphology(root: str | pathlib.Path, **kwargs) -> ClassFolderSource:
    """The nanowire morphology set (Zenodo 10.5281/zenodo.6377140): 4 classes.

    Only the jpg images are read; the png masks beside them are skipped.
    `groups` joins each singular image's rotations (`<stem>_1/_2/_3.jpg`) to
    `<stem>.jpg` (`data/groups.py`), unless a `groups.csv` in `root` says
    otherwise. `kwargs` go to `ClassFolderSource`.
    """
    source = ClassFolderSource(root, classes=NANOWIRE_CLASSES, extensions=_JPEG, **kwargs)
    if source.groups is None:
        source.groups = rotation_groups(source.root, source.paths)
    return source


def nanowire_segmentation(
    root: str | pathlib.Path, *, mask_encoding: MaskEncoding = 'auto', **kwargs
) -> MaskedImageSource:
    """The dispersed and network nanowire images with their png masks.

    The release's masks are png files beside the jpg images (same stem). They
    may be annotation overlays (colour on gray) or binary images, hence
    mask_encoding='auto'. `kwargs` go to `MaskedImageSource`.
    """
    return MaskedImageSource(
        root,
        mask_suffix='.png',
        mask_encoding=mask_encoding,
        class_folders=True,
        classes=NANOWIRE_MASKED_CLASSES,
        extensions=_JPEG,
        **kwargs,
    )


def mnp_morphology(
    root: str | pathlib.Path, *, classes: Sequence[str] = MNP_CLASSES, **kwargs
) -> ClassFolderSource:
    """AutoDetect-mNP images sorted into the paper's 3 assembly morphologies."""
    return ClassFolderSource(root, classes=classes, **kwargs)


def tem_virus(
    root: str | pathlib.Path, *, classes: Sequence[str] | None = None, **kwargs
) -> dict[str, ClassFolderSource]:
    """The TEM virus set with its own train/validation/test split.

    Args:
      root: Folder holding train/, validation/ and test/, each with one
        folder per virus.
      classes: Viruses to use (the paper used 9 of 14); None takes every class
        folder of train/. validation/ and test/ must hold the same classes, so
        a label id means the same virus in every split.
      **kwargs: Passed to `ClassFolderSource`.

    Returns:
      {'train': ..., 'validation': ..., 'test': ...} with equal class_names.
    """
    root = _existing_folder(root, IMAGE_EXTENSIONS)
    if classes is None:
        classes = _class_folders(root / 'train', None, IMAGE_EXTENSIONS)
    return {name: ClassFolderSource(root / name, classes=classes, **kwargs) for name in VIRUS_SPLITS}


def cem500k(
    root: str | pathlib.Path, *, subset: int | None = 832, seed: int = 0, **kwargs
) -> UnlabeledFolderSource:
    """A flat (or nested) folder of CEM500K images; 832 drawn by seed as in the paper."""
    return UnlabeledFolderSource(root, subset=subset, seed=seed, **kwargs)
