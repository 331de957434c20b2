"""Random-access image sources over folders on disk and arrays in memory.

Every source follows Grain's `RandomAccessDataSource` protocol: `len(source)`
and `source[i]` -> a record, a dict of numpy arrays:

  'image': float32 (H, W), or (H, W, 3) for colour files with keep_color;
           values in [0, 1].
  'label': np.int32 scalar (labeled sources).
  'mask':  uint8 (H, W) in {0, 1} (mask sources).

File sources scan their folder once, in sorted order, and store paths only;
images are decoded in `__getitem__` (first frame of multi-frame files), so a
source pickles cheaply into Grain worker processes. Labels come from folder
names without reading any image, which is what the splits need. Problems raise
`DataError` naming the file, folder or class; files skipped for an unknown
extension are counted in `skipped` and logged, never dropped silently.

In-memory arrays (the synthetic generator's output) are `arrays.ArraySource`;
the published dataset layouts are in `layouts.py` (docs/datasets.md).
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from fewshot_jax.data import readable
from fewshot_jax.data.groups import GROUPS_FILE, read_groups_csv
from fewshot_jax.data.io import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_PERCENTILES,
    IMAGE_EXTENSIONS,
    DataError,
    MaskEncoding,
    read_image,
    read_mask,
)

logger = logging.getLogger(__name__)

HIDDEN = '(hidden)'
NO_EXTENSION = '(no extension)'
OUTSIDE_CLASS_FOLDERS = '(outside class folders)'
LINK_REVISIT = '(link to a folder read already)'


class _FileSource:
    """Shared behaviour of sources that read image files lazily."""

    def __init__(self, root, *, keep_color, max_pixels, percentiles):
        self.root = pathlib.Path(root)
        self.keep_color = keep_color
        self.max_pixels = max_pixels
        self.percentiles = percentiles
        self.paths: list[pathlib.Path] = []
        self.skipped: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        # Grain checkpoints identify the source by its repr: keep it stable.
        return f'{type(self).__name__}(root={str(self.root)!r}, n={len(self)})'

    def _index(self, index) -> int:
        index = int(index)
        if not 0 <= index < len(self.paths):
            raise IndexError(f'{self!r}: index {index} out of range [0, {len(self.paths)})')
        return index

    def _read(self, index: int) -> np.ndarray:
        return read_image(
            self.paths[index],
            keep_color=self.keep_color,
            max_pixels=self.max_pixels,
            percentiles=self.percentiles,
        )

    def validate(self) -> None:
        """Reads every record once; raises DataError listing every bad file."""
        self.check_readable('error')

    def check_readable(self, on_unreadable: str = 'error') -> list[pathlib.Path]:
        """Reads every record once, before any training; see `readable.check_readable`."""
        return readable.check_readable(self, on_unreadable)

    def drop(self, indices: list[int]) -> None:
        """Removes records by index from every per-record list the source keeps."""
        gone = set(indices)
        keep = [i for i in range(len(self.paths)) if i not in gone]
        self.paths = [self.paths[i] for i in keep]
        if getattr(self, 'labels', None) is not None:
            self.labels = self.labels[keep]
        if getattr(self, 'mask_paths', None) is not None:
            self.mask_paths = [self.mask_paths[i] for i in keep]


def scan_images(
    folder: str | pathlib.Path,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
) -> tuple[list[pathlib.Path], dict[str, int]]:
    """Lists image files under a folder in sorted (relative path) order.

    Args:
      folder: The folder to scan; must exist.
      extensions: Accepted lower-case extensions; matching ignores case.
      recursive: Also scan sub-folders, following symbolic links to folders; a
        folder reached twice (a link loop) is read once and counted as
        '(link to a folder read already)'.

    Returns:
      (paths, skipped): the image files, and counts of the files left out by
      extension ('.txt': 3), with '(hidden)' for dot-files and dot-folders
      (not entered) and '(no extension)'.

    Raises:
      DataError: The folder does not exist or is not a folder.
    """
    folder = _existing_folder(folder, extensions)
    accepted = {e.lower() for e in extensions}
    paths, skipped = [], Counter()
    # Symbolic links to folders are followed (datasets are often assembled from links); a
    # folder reached a second time (a link loop, or two links to one folder) is read once
    # and counted, never entered again.
    seen = {os.path.realpath(folder)}
    walker = os.walk(folder, followlinks=True) if recursive else [(str(folder), [], _files_in(folder))]
    for dirpath, dirnames, filenames in walker:
        # Hidden folders (.ipynb_checkpoints, .thumbnails) hold copies, not data.
        skipped[HIDDEN] += sum(d.startswith('.') for d in dirnames)
        entered = []
        for name in dirnames:
            if name.startswith('.'):
                continue
            real = os.path.realpath(os.path.join(dirpath, name))
            if real in seen:
                skipped[LINK_REVISIT] += 1
                logger.warning(
                    '%s: not entered, it leads to %s, which is read already',
                    os.path.join(dirpath, name),
                    real,
                )
                continue
            seen.add(real)
            entered.append(name)
        dirnames[:] = entered
        for name in filenames:
            suffix = pathlib.PurePath(name).suffix.lower()
            if name.startswith('.'):
                skipped[HIDDEN] += 1
            elif suffix in accepted:
                paths.append(pathlib.Path(dirpath, name))
            else:
                skipped[suffix or NO_EXTENSION] += 1
    paths.sort(key=lambda p: p.relative_to(folder).as_posix())
    return paths, {k: v for k, v in sorted(skipped.items()) if v}


class UnlabeledFolderSource(_FileSource):
    """Images in a flat or nested folder, without labels (pretraining sets).

    Records: {'image'}.

    Args:
      root: The folder.
      subset: If set, draw this many files (without replacement, by `seed`)
        from the sorted file list, as the paper drew 832 CEM500K images per run.
      seed: Seed of the subset draw.
      recursive: Also read sub-folders.
      keep_color: Keep colour files as (H, W, 3) (ImageNet-like photos).
      max_pixels: Largest image accepted, see `read_image`.
      percentiles: Robust scaling of deep (16-bit, float) data.
      extensions: Accepted file extensions.
    """

    def __init__(
        self,
        root: str | pathlib.Path,
        *,
        subset: int | None = None,
        seed: int = 0,
        recursive: bool = True,
        keep_color: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        super().__init__(root, keep_color=keep_color, max_pixels=max_pixels, percentiles=percentiles)
        paths, self.skipped = scan_images(self.root, extensions=extensions, recursive=recursive)
        _log_skipped(self.root, self.skipped)
        if not paths:
            raise DataError(
                f'{self.root}: no image files found{" (recursively)" if recursive else ""}; '
                f'accepted extensions: {", ".join(extensions)}{_skipped_note(self.skipped)}'
            )
        self.subset, self.seed = subset, seed
        if subset is not None:
            if not 0 < subset <= len(paths):
                raise DataError(
                    f'{self.root}: subset={subset} but the folder has {len(paths)} images; '
                    f'expected 1 <= subset <= {len(paths)}'
                )
            chosen = np.random.default_rng(seed).choice(len(paths), size=subset, replace=False)
            paths = [paths[i] for i in np.sort(chosen)]
        self.paths = paths

    def __repr__(self) -> str:
        return (
            f'UnlabeledFolderSource(root={str(self.root)!r}, n={len(self)}, '
            f'subset={self.subset}, seed={self.seed})'
        )

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {'image': self._read(self._index(index))}


class ClassFolderSource(_FileSource):
    """Labeled images, one sub-folder per class (class names sorted).

    Records: {'image', 'label'}. `labels[i]` indexes `class_names`. Files
    directly in `root` are counted in `skipped` as '(outside class folders)'.
    `groups` holds, per image, the original it derives from, read from a
    `groups.csv` in `root` (`data/groups.py`), or is None: splits keep a group
    on one side.

    Args:
      root: The folder holding one folder per class.
      classes: Class folders to use; None uses every non-hidden sub-folder.
        Either way the class names are sorted, so label ids are stable.
      recursive: Also read sub-folders of each class folder.
      keep_color, max_pixels, percentiles, extensions: As for
        `UnlabeledFolderSource`.
    """

    def __init__(
        self,
        root: str | pathlib.Path,
        *,
        classes: Sequence[str] | None = None,
        recursive: bool = True,
        keep_color: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        super().__init__(root, keep_color=keep_color, max_pixels=max_pixels, percentiles=percentiles)
        self.extensions, self.recursive = tuple(extensions), recursive
        self.class_names = _class_folders(self.root, classes, extensions)
        paths, labels, skipped = [], [], Counter()
        loose = [name for name in _files_in(self.root) if name != GROUPS_FILE]
        if loose:
            skipped[OUTSIDE_CLASS_FOLDERS] += len(loose)
        for label, name in enumerate(self.class_names):
            found, skipped_here = self._scan_folder(self.root / name)
            if not found:
                raise DataError(
                    f'{self.root / name}: class {name!r} has no image files; accepted '
                    f'extensions: {", ".join(extensions)}{_skipped_note(skipped_here)}'
                )
            skipped.update(skipped_here)
            paths += found
            labels += [label] * len(found)
        self.skipped = dict(sorted(skipped.items()))
        _log_skipped(self.root, self.skipped)
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int32)
        self.groups = read_groups_csv(self.root, paths)

    def _scan_folder(self, folder: pathlib.Path) -> tuple[list[pathlib.Path], dict[str, int]]:
        return scan_images(folder, extensions=self.extensions, recursive=self.recursive)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = self._index(index)
        return {'image': self._read(index), 'label': self.labels[index]}


class MaskedImageSource(ClassFolderSource):
    """Images with a binary mask each, in class folders or a flat folder.

    A mask lives beside its image (`a.jpg` -> `a<mask_suffix>` in the same
    folder) or, with `mask_dir`, at the same relative place under `mask_dir`.
    The nanowire release keeps png masks beside jpg images in the class
    folders: `mask_suffix='.png'`, `extensions=('.jpg',)`. Every image must
    have its mask. Masks beside images that match no image are counted in
    `skipped` as '(mask without image)'.

    Records: {'image', 'mask'} plus 'label' when `class_folders` is True.

    Args:
      root: Folder of images (flat or nested) or of class folders.
      mask_suffix: Appended to the image's stem to name its mask.
      mask_dir: Folder mirroring `root` that holds the masks; None means
        beside the images.
      mask_encoding: How mask files encode the foreground, see `read_mask`.
      class_folders: Whether `root` holds one folder per class.
      classes: With class_folders, the classes to use (e.g. the two nanowire
        classes that have masks).
      recursive, keep_color, max_pixels, percentiles, extensions: As for
        `ClassFolderSource`.
    """

    def __init__(
        self,
        root: str | pathlib.Path,
        *,
        mask_suffix: str = '_mask.png',
        mask_dir: str | pathlib.Path | None = None,
        mask_encoding: MaskEncoding = 'binary',
        class_folders: bool = False,
        classes: Sequence[str] | None = None,
        recursive: bool = True,
        keep_color: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        self.mask_suffix = mask_suffix
        self.mask_dir = pathlib.Path(mask_dir) if mask_dir is not None else None
        self.mask_encoding = mask_encoding
        self.class_folders = class_folders
        if mask_encoding not in ('binary', 'color_overlay', 'auto'):
            raise DataError(
                f"mask_encoding must be 'binary', 'color_overlay' or 'auto', got {mask_encoding!r}"
            )
        if not pathlib.PurePath('x' + mask_suffix).suffix:
            raise DataError(f'mask_suffix {mask_suffix!r} has no file extension, e.g. "_mask.png"')
        if self.mask_dir is None and mask_suffix.lower() in {e.lower() for e in extensions}:
            raise DataError(
                f'mask_suffix {mask_suffix!r} is also an accepted image extension, so masks '
                'beside images would be read as images; narrow `extensions` or set mask_dir'
            )
        if self.mask_dir is not None:
            _existing_folder(self.mask_dir, extensions)
        if class_folders:
            super().__init__(
                root,
                classes=classes,
                recursive=recursive,
                keep_color=keep_color,
                max_pixels=max_pixels,
                percentiles=percentiles,
                extensions=extensions,
            )
        else:
            if classes is not None:
                raise DataError('classes is only meaningful with class_folders=True')
            _FileSource.__init__(
                self, root, keep_color=keep_color, max_pixels=max_pixels, percentiles=percentiles
            )
            self.extensions, self.recursive = tuple(extensions), recursive
            self.paths, self.skipped = self._scan_folder(_existing_folder(self.root, extensions))
            if not self.paths:
                raise DataError(
                    f'{self.root}: no image files found; accepted extensions: '
                    f'{", ".join(extensions)}{_skipped_note(self.skipped)}'
                )
            _log_skipped(self.root, self.skipped)
        self.mask_paths = [self.mask_path(p) for p in self.paths]

    def mask_path(self, image_path: pathlib.Path) -> pathlib.Path:
        """Where the mask of `image_path` is expected."""
        name = image_path.stem + self.mask_suffix
        if self.mask_dir is None:
            return image_path.with_name(name)
        return self.mask_dir / image_path.parent.relative_to(self.root) / name

    def _scan_folder(self, folder):
        suffix = self.mask_suffix.lower()
        if self.mask_dir is not None:
            images, skipped = super()._scan_folder(folder)
        else:
            mask_extension = pathlib.PurePath('x' + suffix).suffix
            files, skipped = scan_images(
                folder, extensions=self.extensions + (mask_extension,), recursive=self.recursive
            )
            masks = {p for p in files if p.name.lower().endswith(suffix)}
            image_extensions = {e.lower() for e in self.extensions}
            images, skipped = [], Counter(skipped)
            for p in files:
                if p in masks:
                    continue
                if p.suffix.lower() in image_extensions:
                    images.append(p)
                else:
                    skipped[p.suffix.lower()] += 1
            orphans = masks - {self.mask_path(p) for p in images}
            if orphans:
                skipped['(mask without image)'] += len(orphans)
                logger.warning('%s: %d mask(s) match no image, e.g. %s', folder, len(orphans), min(orphans))
            skipped = dict(sorted(skipped.items()))
        missing = [(p, self.mask_path(p)) for p in images if not self.mask_path(p).is_file()]
        if missing:
            shown = '\n'.join(f'  {img} -> {mask}' for img, mask in missing[:5])
            raise DataError(
                f'{len(missing)} image(s) in {folder} have no mask (mask_suffix='
                f'{self.mask_suffix!r}, mask_dir={self.mask_dir}); expected:\n{shown}'
                f'{chr(10) + "  ..." if len(missing) > 5 else ""}'
            )
        return images, skipped

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = self._index(index)
        image = self._read(index)
        mask = read_mask(
            self.mask_paths[index],
            encoding=self.mask_encoding,
            expected_shape=image.shape[:2],
            image_path=self.paths[index],
            max_pixels=self.max_pixels,
        )
        record = {'image': image, 'mask': mask}
        if self.class_folders:
            record['label'] = self.labels[index]
        return record


def _existing_folder(folder, extensions) -> pathlib.Path:
    folder = pathlib.Path(folder)
    if not folder.exists():
        raise DataError(
            f'{folder}: data folder does not exist; expected a folder of images ({", ".join(extensions)})'
        )
    if not folder.is_dir():
        raise DataError(f'{folder}: not a folder; expected a folder of images')
    return folder


def _files_in(folder: pathlib.Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file())


def _class_folders(root, classes, extensions) -> tuple[str, ...]:
    root = _existing_folder(root, extensions)
    present = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))
    if classes is None:
        if not present:
            raise DataError(f'{root}: no class folders; expected one sub-folder per class')
        return tuple(present)
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(f'{root}: class folder(s) {missing} missing; found {present}')
    if len(set(classes)) != len(classes):
        raise DataError(f'{root}: classes {list(classes)} has duplicates')
    return tuple(sorted(classes))


def _skipped_note(skipped: dict[str, int]) -> str:
    if not skipped:
        return ''
    return '; skipped ' + ', '.join(f'{n} {k}' for k, n in skipped.items())


def _log_skipped(root, skipped: dict[str, int]) -> None:
    if skipped:
        # On the console, not only in log.txt: a count the user did not expect is a wrong root.
        logger.warning('%s: skipped %d file(s) or folder(s): %s', root, sum(skipped.values()), skipped)
