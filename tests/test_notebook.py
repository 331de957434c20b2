"""notebooks/analyze_checkpoint.ipynb runs end to end on a tiny pretraining run (nbclient)."""

from pathlib import Path

import numpy as np
import pytest

from tests.test_encoder import tiny_trained_workdir

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'notebooks' / 'analyze_checkpoint.ipynb'


def run_notebook(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The kernel inherits this environment. The inline backend renders headless (Agg) into the
    # cell outputs, which are checked below; a user's MPLBACKEND would send figures elsewhere.
    monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name='python3',
        resources={'metadata': {'path': str(REPO / 'notebooks')}},
    ).execute()
    return notebook


def outputs_of(notebook):
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get('outputs', []):
            if output.get('output_type') == 'stream' and output.get('name') == 'stdout':
                text.append(output['text'])
            images += 'image/png' in output.get('data', {})
    return ''.join(text), images


def test_notebook_runs_on_a_tiny_checkpoint(tmp_path_factory, monkeypatch):
    workdir = tiny_trained_workdir(tmp_path_factory)
    notebook = run_notebook(
        monkeypatch,
        FEWSHOT_WORKDIR=str(workdir),
        FEWSHOT_PER_CLASS='8',
        FEWSHOT_IMAGE_SIZE='48',
        FEWSHOT_SHOTS='1,2',
        FEWSHOT_SEEDS='3',
    )
    text, images = outputs_of(notebook)
    # Curves, t-SNE, neighbours and probe each draw a figure.
    assert images == 4
    assert "Encoder('tiny_pretrained_run': ResNet18, width 4" in text
    assert '6 logged steps' in text
    assert '32 images of (48, 48) px' in text
    assert 'features (32, 32)' in text
    assert 'precision@4 over all 32 queries' in text
    assert 'k=  1: accuracy' in text and 'k=  2: accuracy' in text
    assert 'no segmentation run found' in text


def test_notebook_encodes_a_user_class_folder(tmp_path_factory, monkeypatch, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(('holes', 'rods', 'plain')):
        (tmp_path / name).mkdir()
        for i in range(5):
            pixels = (rng.random((30 + 5 * c, 40)) * 60 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f'{i}.png')
    workdir = tiny_trained_workdir(tmp_path_factory)
    notebook = run_notebook(
        monkeypatch,
        FEWSHOT_WORKDIR=f'checkpoint:{workdir}@4',
        FEWSHOT_DATA=str(tmp_path),
        FEWSHOT_IMAGE_SIZE='32',
        FEWSHOT_SHOTS='1,2',
        FEWSHOT_SEEDS='2',
    )
    text, _ = outputs_of(notebook)
    assert "Encoder('tiny_pretrained_run@4'" in text
    assert "15 images of (32, 32) px, classes ['holes', 'plain', 'rods']" in text
    assert 'k=  2: accuracy' in text


def test_notebook_shows_the_unet_prediction_of_a_segmentation_run(tmp_path_factory, monkeypatch, tmp_path):
    import shutil

    from configs.unet_nanowire import get_config
    from fewshot_jax import tasks

    workdir = tmp_path / 'run'
    shutil.copytree(tiny_trained_workdir(tmp_path_factory), workdir)
    config = get_config('tiny')
    config.segment.encoders = ('pretrained=checkpoint:{workdir}',)
    tasks.run('segment', config, workdir)
    notebook = run_notebook(
        monkeypatch,
        FEWSHOT_WORKDIR=str(workdir),
        FEWSHOT_PER_CLASS='4',
        FEWSHOT_IMAGE_SIZE='48',
        FEWSHOT_SHOTS='1',
        FEWSHOT_SEEDS='1',
    )
    text, images = outputs_of(notebook)
    assert images == 5  # curves, t-SNE, neighbours, probe and the U-Net panel
    assert 'Segmenter(paper decoder on ResNet18 width 4, 64 px tiles' in text
    assert 'pretrained_64px_k2' in text
    assert 'against the true mask of image 0' in text
