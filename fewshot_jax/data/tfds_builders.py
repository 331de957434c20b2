"""TFDS builders that convert a local copy of a published layout to ArrayRecord.

A dataset folder is converted once per resolution into ArrayRecord files;
pipelines then read them by random access with `tfds.data_source` (or
`TfdsSource`, which returns records in the sources' convention). Nothing is
downloaded: the local copy is the TFDS "manual" folder, laid out as
docs/datasets.md describes.

    from fewshot_jax.data import tfds_builders
    tfds_builders.prepare('nanowire_morphology', manual_dir='~/data/2022-nanowire-morphology',
                          data_dir='~/tfds', resolution=224)
    source = tfds_builders.TfdsSource('nanowire_morphology', split='train',
                                      data_dir='~/tfds', resolution=224)

No TensorFlow is needed: images are handed to TFDS already PNG-encoded (by
Pillow) and TFDS decodes them with Pillow when reading. Each image is resized
so its shorter side is the resolution and the centre square kept (bilinear,
antialiased; masks nearest-neighbour), stored as uint8 (res, res, 1).

Every file is read through `sources`, so a bad file stops the build with its
`DataError`; TFDS writes into an 'incomplete' folder and only renames it when
every split succeeded, so a failed build leaves no dataset behind.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from fewshot_jax.data import layouts, sources
from fewshot_jax.data.io import DataError
from fewshot_jax.data.resize import square_crop_resize

RESOLUTIONS = (224, 384, 512, 768, 1024)
_VERSION = tfds.core.Version('1.0.0')


@dataclasses.dataclass(eq=False)
class LayoutConfig(tfds.core.BuilderConfig):
    """One stored resolution; `classes` optionally narrows the class folders."""

    resolution: int = 224
    classes: tuple[str, ...] | None = None


def _configs() -> list[LayoutConfig]:
    return [
        LayoutConfig(name=f'res{r}', resolution=r, version=_VERSION, description=f'{r} x {r} px, uint8')
        for r in RESOLUTIONS
    ]


class _LayoutBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared generation: read each record of a layout's sources, resize, encode."""

    VERSION = _VERSION
    BUILDER_CONFIGS = _configs()
    HOMEPAGE = ''
    CITATION = ''
    CLASS_NAMES: tuple[str, ...] | None = None  # None: read from the manual folder
    HAS_LABELS = True
    HAS_MASKS = False

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this from the top-level package, which fails when the
        # package is imported as a namespace package (some editable installs).
        return epath.Path(__file__)

    def _layout(
        self, root: pathlib.Path
    ) -> dict[str, sources.UnlabeledFolderSource | sources.ClassFolderSource]:
        """Returns {split name: source} for a local copy at `root`."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.resolution
        features = {
            'image': tfds.features.Image(shape=(size, size, 1), dtype=np.uint8, encoding_format='png'),
            'file_name': tfds.features.Text(),
        }
        if self.HAS_LABELS:
            names = self.builder_config.classes or self.CLASS_NAMES
            features['label'] = tfds.features.ClassLabel(names=sorted(names) if names is not None else None)
        if self.HAS_MASKS:
            features['mask'] = tfds.features.Image(
                shape=(size, size, 1), dtype=np.uint8, encoding_format='png'
            )
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or '').strip(),
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        layout = self._layout(root)
        if self.HAS_LABELS:
            # Classes found in the folder fix the label names when the builder
            # does not declare them (TFDS allows setting them once).
            class_names = next(iter(layout.values())).class_names
            self.info.features['label'].names = list(class_names)
        return {split: self._generate_examples(source, root) for split, source in layout.items()}

    def _generate_examples(self, source, root):
        size = self.builder_config.resolution
        for index in range(len(source)):
            record = source[index]
            key = source.paths[index].relative_to(root).as_posix()
            image = square_uint8(record['image'], size, Image.Resampling.BILINEAR)
            example = {'image': _png(image), 'file_name': key}
            if self.HAS_LABELS:
                example['label'] = int(record['label'])
            if self.HAS_MASKS:
                example['mask'] = _png(square_uint8(record['mask'], size, Image.Resampling.NEAREST))
            yield key, example


class NanowireMorphology(_LayoutBuilder):
    """Peptide/protein nanowire morphologies (4 classes), Lu et al. 2022."""

    HOMEPAGE = 'https://doi.org/10.5281/zenodo.6377140'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the nanowire morphology images from Zenodo (10.5281/zenodo.6377140)
    and unzip bundle/, dispersed/, network/ and singular/ into one folder; pass
    that folder as manual_dir. Only the jpg images are read.
    """
    CLASS_NAMES = layouts.NANOWIRE_CLASSES

    def _layout(self, root):
        return {'train': layouts.nanowire_morphology(root)}


class NanowireSegmentation(_LayoutBuilder):
    """Dispersed and network nanowire images with their binary masks."""

    HOMEPAGE = 'https://doi.org/10.5281/zenodo.6377140'
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        NanowireMorphology.MANUAL_DOWNLOAD_INSTRUCTIONS
        + """
    The png masks beside the dispersed and network jpg images (same file stem)
    are read as masks.
    """
    )
    CLASS_NAMES = layouts.NANOWIRE_MASKED_CLASSES
    HAS_MASKS = True

    def _layout(self, root):
        return {'train': layouts.nanowire_segmentation(root)}


class MnpMorphology(_LayoutBuilder):
    """AutoDetect-mNP TEM images in 3 assembly morphologies."""

    HOMEPAGE = 'https://doi.org/10.6078/D1WT44'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download AutoDetect-mNP (10.6078/D1WT44), sort the images into
    dispersed/, separate_clusters/ and percolating_cluster/ (see
    docs/datasets.md) and pass the folder holding those three as manual_dir.
    """
    CLASS_NAMES = layouts.MNP_CLASSES

    def _layout(self, root):
        return {
            'train': layouts.mnp_morphology(root, classes=self.builder_config.classes or layouts.MNP_CLASSES)
        }


class TemVirus(_LayoutBuilder):
    """TEM virus images with the dataset's own train/validation/test split."""

    HOMEPAGE = 'https://doi.org/10.17632/x4dwwfwtw3.3'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the TEM virus dataset (Matuszewski & Sintorn, Mendeley Data
    10.17632/x4dwwfwtw3) and pass the folder holding train/, validation/ and
    test/ (each with one folder per virus) as manual_dir. To keep only some
    viruses, build with a custom LayoutConfig(classes=(...)).
    """

    def _layout(self, root):
        return layouts.tem_virus(root, classes=self.builder_config.classes)


class Cem500k(_LayoutBuilder):
    """Unlabeled generic EM images (a CEM500K subset), flat or nested."""

    HOMEPAGE = 'https://doi.org/10.7554/eLife.65894'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download CEM500K (EMPIAR-10592) or a subset of it and pass the folder of
    images as manual_dir; every image in it is converted.
    """
    HAS_LABELS = False

    def _layout(self, root):
        return {'train': layouts.cem500k(root, subset=None)}


BUILDERS = {b.name: b for b in (NanowireMorphology, NanowireSegmentation, MnpMorphology, TemVirus, Cem500k)}


def prepare(
    name: str,
    *,
    manual_dir: str | pathlib.Path,
    data_dir: str | pathlib.Path,
    resolution: int = 224,
    classes: Sequence[str] | None = None,
) -> tfds.core.DatasetBuilder:
    """Converts a local copy of a layout into ArrayRecord files (once).

    Args:
      name: A key of `BUILDERS` ('nanowire_morphology', 'tem_virus', ...).
      manual_dir: The local copy, laid out as docs/datasets.md describes.
      data_dir: Where TFDS writes `<name>/res<resolution>/<version>/`.
      resolution: Side of the stored square images; `RESOLUTIONS` are the
        predefined configs, any other size >= 8 gets a custom config.
      classes: Optionally the class folders to keep (mNP, virus); the build
        config is then named 'res<resolution>_<classes joined by ->'.

    Returns:
      The prepared builder; an existing build is reused, not rebuilt.

    Raises:
      DataError: Unknown name or resolution, missing manual_dir, or any bad
        file in it (then no dataset is left in data_dir).
    """
    if name not in BUILDERS:
        raise DataError(f'unknown dataset {name!r}; expected one of {sorted(BUILDERS)}')
    if not isinstance(resolution, int) or resolution < 8:
        raise DataError(f'resolution must be an integer >= 8, got {resolution!r}')
    manual_dir = pathlib.Path(manual_dir).expanduser()
    if not manual_dir.is_dir():
        raise DataError(
            f'{manual_dir}: manual_dir does not exist; expected a local copy of '
            f'{name}:{BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS}'
        )
    config: str | LayoutConfig = f'res{resolution}'
    if classes is not None or resolution not in RESOLUTIONS:
        classes = tuple(sorted(classes)) if classes is not None else None
        suffix = f'_{"-".join(classes)}' if classes else ''
        config = LayoutConfig(
            name=f'res{resolution}{suffix}', resolution=resolution, classes=classes, version=_VERSION
        )
    builder = BUILDERS[name](
        config=config, data_dir=str(pathlib.Path(data_dir).expanduser()), file_format='array_record'
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


class TfdsSource:
    """A prepared split read by random access, in the sources' record convention.

    Records: 'image' float32 (res, res) in [0, 1]; 'label' np.int32 when the
    dataset has labels; 'mask' uint8 (res, res) in {0, 1} when it has masks.
    `labels`, `class_names` and `paths` (file names relative to the local copy)
    are read once without decoding any image.

    Args:
      name: A key of `BUILDERS`.
      split: 'train', or 'validation' / 'test' for the virus set.
      data_dir: The data_dir given to `prepare`.
      resolution: The prepared resolution.
      config: A config name other than 'res<resolution>' (a class subset).
    """

    def __init__(
        self,
        name: str,
        *,
        split: str,
        data_dir: str | pathlib.Path,
        resolution: int = 224,
        config: str | None = None,
    ):
        self.name, self.split = name, split
        self.config = config or f'res{resolution}'
        self.data_dir = str(pathlib.Path(data_dir).expanduser())
        self._source = self._open(decoders=None)
        features = self._source.dataset_info.features
        self.class_names = tuple(features['label'].names) if 'label' in features else None
        skip = self._open(
            decoders={k: tfds.decode.SkipDecoding() for k in ('image', 'mask') if k in features}
        )
        meta = [skip[i] for i in range(len(skip))]
        self.paths = [pathlib.Path(m['file_name'].decode()) for m in meta]
        self.labels = (
            np.asarray([m['label'] for m in meta], np.int32) if self.class_names is not None else None
        )

    def _open(self, decoders):
        try:
            data_sources = tfds.data_source(
                f'{self.name}/{self.config}', data_dir=self.data_dir, split=self.split, decoders=decoders
            )
        except Exception as err:  # TFDS raises several types for a missing build
            raise DataError(
                f'{self.data_dir}: no prepared {self.name}/{self.config} split {self.split!r}; '
                f'run tfds_builders.prepare first ({type(err).__name__}: {err})'
            ) from err
        return data_sources

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f'TfdsSource(name={self.name!r}, config={self.config!r}, split={self.split!r}, n={len(self)})'

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        raw = self._source[int(index)]
        record = {'image': raw['image'][..., 0].astype(np.float32) / np.float32(255.0)}
        if 'label' in raw:
            record['label'] = np.int32(raw['label'])
        if 'mask' in raw:
            record['mask'] = np.ascontiguousarray(raw['mask'][..., 0])
        return record


def square_uint8(image: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """(H, W) float [0, 1] or uint8 -> uint8 (size, size, 1).

    The shorter side is resized to `size` and the centre square kept, so
    non-square micrographs are not distorted (the pipeline's geometry).
    """
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return square_crop_resize(Image.fromarray(image), size, resample)[..., None]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, format='PNG')
    return buffer.getvalue()
