"""The study's report: ``WORKDIR/report.html`` (self-contained) and ``report.md``.

Reads only workdir files — ``workflow.json``, each pretraining run's
``metrics.jsonl``, the probe's ``summary.json`` and figures, the segmentation
stage's ``summary.json`` and figures — so it needs no JAX and can be rebuilt
anywhere::

    python -m fewshot_jax.analysis.report runs/demo
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

PROBE_HEAD = 'logistic'


class ReportError(ValueError):
    """The folder is not a workflow workdir."""


def write_report(workdir: str | Path) -> Path:
    """Writes ``report.html`` and ``report.md`` for a workflow workdir; returns the HTML path."""
    workdir = Path(workdir)
    if not (workdir / 'workflow.json').is_file():
        raise ReportError(
            f'{workdir}: no workflow.json; expected the --workdir of a '
            f'`launch.py --config=configs/workflow.py` run'
        )
    record = json.loads((workdir / 'workflow.json').read_text())
    sections = [
        _environment(record),
        _pretraining(workdir),
        _probe(workdir),
        _segmentation(workdir),
        _grid(workdir),
    ]
    sections = [s for s in sections if s is not None]
    title = f'fewshot_jax study: {workdir.name}'
    (workdir / 'report.md').write_text(f'# {title}\n\n' + '\n\n'.join(s.markdown() for s in sections) + '\n')
    path = workdir / 'report.html'
    path.write_text(_HTML.format(title=html.escape(title), body='\n'.join(s.html() for s in sections)))
    return path


class Section:
    """A heading, paragraphs, tables and figures, rendered to HTML and Markdown."""

    def __init__(self, title: str):
        self.title, self.parts = title, []

    def text(self, paragraph: str) -> Section:
        self.parts.append(('text', paragraph))
        return self

    def table(self, header: list[str], rows: list[list]) -> Section:
        self.parts.append(('table', (header, rows)))
        return self

    def figure(self, png: bytes, caption: str, markdown_path: str | None = None) -> Section:
        self.parts.append(('figure', (png, caption, markdown_path)))
        return self

    def html(self) -> str:
        out = [f'<h2>{html.escape(self.title)}</h2>']
        for kind, value in self.parts:
            if kind == 'text':
                out.append(f'<p>{html.escape(value)}</p>')
            elif kind == 'table':
                header, rows = value
                head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in header)
                body = ''.join(
                    '<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row) + '</tr>' for row in rows
                )
                out.append(f'<table><tr>{head}</tr>{body}</table>')
            else:
                png, caption, _ = value
                data = base64.b64encode(png).decode()
                out.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="'
                    f'{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                    f'</figcaption></figure>'
                )
        return '\n'.join(out)

    def markdown(self) -> str:
        out = [f'## {self.title}']
        for kind, value in self.parts:
            if kind == 'text':
                out.append(value)
            elif kind == 'table':
                header, rows = value
                out.append(
                    '| '
                    + ' | '.join(map(str, header))
                    + ' |\n|'
                    + '---|' * len(header)
                    + '\n'
                    + '\n'.join('| ' + ' | '.join(map(str, r)) + ' |' for r in rows)
                )
            else:
                _, caption, path = value
                out.append(f'![{caption}]({path})' if path else f'*{caption}* (in report.html)')
        return '\n\n'.join(out)


def _environment(record: dict) -> Section:
    env = record.get('environment', {})
    section = Section('Run')
    section.text(', '.join(f'{k}: {v}' for k, v in env.items()))
    units = record.get('units', {})
    if units:
        section.table(
            ['stage / unit', 'task', 'wall time (s)'],
            [[k, u.get('task', ''), u.get('seconds', '')] for k, u in units.items()],
        )
    return section


def _pretraining(workdir: Path) -> Section | None:
    runs = sorted(p.parent for p in (workdir / 'pretrain').glob('*/metrics.jsonl'))
    if not runs:
        return None
    section = Section('Pretraining')
    fig, (loss_ax, probe_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    probe_keys = set()
    for run in runs:
        lines = [json.loads(x) for x in (run / 'metrics.jsonl').read_text().splitlines() if x]
        train = [m for m in lines if 'loss' in m]
        loss_ax.plot([m['step'] for m in train], [m['loss'] for m in train], label=run.name)
        for key in sorted(
            {k for m in lines for k in m if k.startswith('probe/') and k.endswith('_logistic')}
        ):
            points = [(m['step'], m[key]) for m in lines if key in m]
            probe_ax.plot(
                *zip(*points, strict=True), marker='o', label=f'{run.name}: {key.removeprefix("probe/")}'
            )
            probe_keys.add(key)
    loss_ax.set(xlabel='step', ylabel='loss', title='pretraining loss', yscale='log')
    loss_ax.legend(fontsize=8)
    probe_ax.set(xlabel='step', ylabel='median accuracy', title='online probe (step 0 = random init)')
    if probe_keys:
        probe_ax.legend(fontsize=7)
    section.figure(_png(fig), 'Pretraining loss and the online few-shot probe during training', None)
    rows = []
    for run in runs:
        done = run / 'DONE.json'
        summary = json.loads(done.read_text()) if done.is_file() else {}
        rows.append(
            [
                run.name,
                summary.get('step', 'running'),
                _fmt(summary.get('final_loss')),
                summary.get('encoder', ''),
            ]
        )
    section.table(['encoder', 'steps', 'final loss', 'saved to'], rows)
    return section


def _probe(workdir: Path) -> Section | None:
    summaries = sorted((workdir / 'probe').glob('*/probe/summary.json'))
    if not summaries:
        return None
    section = Section('Few-shot classification (frozen encoders, linear probe)')
    section.text(
        'Median test accuracy over the runs (split seeds x draws) with the 95 % '
        'confidence interval of the median, for each number of labeled images per '
        'class; random init and the encoder-free baselines are fitted on the same draws.'
    )
    for path in summaries:
        task = path.parent.parent.name
        summary = json.loads(path.read_text())
        head = PROBE_HEAD if PROBE_HEAD in summary['accuracy'] else summary['heads'][0]
        table = summary['accuracy'][head]
        ks = sorted({k for by_k in table.values() for k in by_k}, key=_k_order)
        rows = [[encoder] + [_cell(by_k.get(k)) for k in ks] for encoder, by_k in table.items()]
        section.text(
            f'{task} ({summary["data"]["description"]}, {summary["data"]["images"]} images, {head} head):'
        )
        section.table(['encoder'] + [f'k={k}' for k in ks], rows)
        gaps = summary.get('gaps', {}).get(head)
        if gaps:
            section.text(
                f"{task}: paired gap over each encoder's own @0 init (same draws), mean accuracy "
                'difference [95 % t-interval]; over pretraining seeds where several are listed, '
                'otherwise over the draws of one seed (split-to-split noise only).'
            )
            section.table(
                ['encoder − its @0 init'] + [f'k={k}' for k in ks] + ['interval over'], _gap_rows(gaps, ks)
            )
        selection = summary.get('selection', {}).get(head)
        if selection:
            section.text(_selection_sentence(task, selection))
        for png in sorted((path.parent.parent / 'figures').glob('*.png')):
            section.figure(
                png.read_bytes(), f'{task}: {png.stem.replace("_", " ")}', str(png.relative_to(workdir))
            )
    return section


SELECTION_KS = ('1', '2', '4')


def _selection_sentence(task: str, selection: dict) -> str:
    """What label selection buys on ``task``: each strategy's paired gap over random draws
    (same splits) at 1, 2 and 4 labels per class, for the first encoder with selected runs."""
    encoder, strategies = next(iter(selection.items()))
    parts = []
    for strategy, by_k in strategies.items():
        cells = []
        for k in SELECTION_KS:
            cell = by_k.get(k)
            if cell is None:
                continue
            low, high = cell['ci95']
            interval = '' if low is None or high is None else f' [{low:+.3f}, {high:+.3f}]'
            cells.append(f'k={k} {cell["gap_mean"]:+.3f}{interval}')
        if cells:
            parts.append(f'{strategy}: ' + ', '.join(cells))
    if not parts:
        return f'{task}: no selection strategy was run at k = 1, 2 or 4.'
    return (
        f'{task}: choosing which images to label from the {encoder} features (label-blind, '
        'budget k x classes) against class-balanced random draws on the same splits, mean '
        'accuracy gap [95 % t-interval over splits]: ' + '; '.join(parts) + '.'
    )


def _gap_rows(gaps: list[dict], ks: list[str]) -> list[list]:
    """One row per encoder group: 'mean [low, high]' per k, then what the interval is over."""
    rows = []
    for row in gaps:
        bn = ' (init weights, BatchNorm statistics of these images)' if row.get('kind') == 'bn-stats' else ''
        name = row['encoder'] + bn
        cells = []
        for k in ks:
            cell = row['by_k'].get(k)
            if cell is None:
                cells.append('')
                continue
            low, high = cell['ci95']
            interval = '' if low is None or high is None else f' [{low:+.3f}, {high:+.3f}]'
            cells.append(f'{cell["mean"]:+.3f}{interval}')
        first = next(iter(row['by_k'].values()), None)
        over = f'{first["seeds"]} seeds, {first["draws"]} draws ({first["over"]})' if first else ''
        rows.append([name, *cells, over])
    return rows


def _segmentation(workdir: Path) -> Section | None:
    summaries = sorted((workdir / 'segment').glob('*/segment/summary.json'))
    if not summaries:
        return None
    section = Section('Segmentation (U-Net decoder on the frozen encoder)')
    section.text(
        'Per encoder, resolution and labeled images per class: median test Dice '
        '[interquartile range], median IoU, agreement of the percolation of predicted '
        'and true masks, and the mean error in pixel density. "none" is the same decoder '
        'trained without encoder features (the image alone): the gap over it is what the '
        'encoder adds. Otsu (one threshold per image, untrained) is a weak baseline.'
    )
    for path in summaries:
        task = path.parent.parent.name
        groups = json.loads(path.read_text())['groups']
        section.table(
            ['encoder', 'px', 'k', 'n', 'Dice', 'IoU', 'percolation agreement', 'density error'],
            [
                [
                    g['encoder'],
                    g['resolution'],
                    g['k'],
                    g['n_test'],
                    f'{g["median_dice"]:.3f} [{g["q1_dice"]:.3f}, {g["q3_dice"]:.3f}]',
                    f'{g["median_iou"]:.3f}',
                    f'{g["percolation_agreement"]:.2f}',
                    f'{g["density_mae"]:.4f}',
                ]
                for g in groups
            ],
        )
        gaps = json.loads(path.read_text()).get('gaps', [])
        if gaps:
            section.text(
                'The first encoder against every other entry: median test Dice of the one minus the '
                'other on the same draw, the mean over draws and its 95 % t-interval over the draws '
                '(one draw gives no interval).'
            )
            section.table(
                ['gap', 'px', 'k', 'draws', 'mean', '95 % interval'],
                [
                    [
                        f'{g["encoder"]} − {g["versus"]}',
                        g['resolution'],
                        g['k'],
                        g['draws'],
                        f'{g["mean_gap"]:+.3f}',
                        f'[{g["low"]:+.3f}, {g["high"]:+.3f}]' if g['low'] is not None else '—',
                    ]
                    for g in gaps
                ],
            )
        for png in sorted((path.parent / 'figures').glob('*.png')):
            section.figure(
                png.read_bytes(), f'{task}: {png.stem.replace("_", " ")}', str(png.relative_to(workdir))
            )
    return section


def _grid(workdir: Path) -> Section | None:
    path = workdir / 'grid' / 'tuning' / 'probe' / 'summary.json'
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    head = summary['heads'][0]
    table = summary['accuracy'][head]
    section = Section('Pretraining settings (probe tuning protocol: cross-validated accuracy)')
    # The runs' own @0 inits are listed for the gap table, not as settings.
    inits = {e['name'] for e in summary.get('encoders', []) if str(e.get('spec', '')).endswith('@0')}
    points = {}
    for encoder, by_k in table.items():
        if encoder in inits:
            continue
        setting, _, seed = encoder.rpartition(' seed')
        cell = by_k.get('cv') or next(iter(by_k.values()))
        points.setdefault(setting, []).append((seed, cell['median']))
    section.table(
        ['setting', 'seeds', 'median accuracy per seed'],
        [[s, len(v), ', '.join(f'{a:.3f}' for _, a in sorted(v))] for s, v in points.items()],
    )
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(points)), 3.5))
    ax.boxplot([[a for _, a in v] for v in points.values()], tick_labels=list(points))
    ax.set(ylabel='cross-validated accuracy', title='accuracy per pretraining setting')
    ax.tick_params(axis='x', labelrotation=30)
    section.figure(
        _png(fig),
        'Probe accuracy per swept pretraining setting (one box per setting, over pretraining seeds)',
    )
    gaps = summary.get('gaps', {}).get(head)
    if gaps:
        section.text(
            "Each setting minus its runs' own @0 inits, paired per split and fold: mean "
            'cross-validated accuracy gap [95 % t-interval over pretraining seeds; over folds '
            'when a setting has one seed].'
        )
        section.table(['setting − its @0 init', 'cross-validated', 'interval over'], _gap_rows(gaps, ['cv']))
    return section


def _k_order(k: str):
    return (1, 0) if k == 'cv' else (0, int(k))


def _cell(cell: dict | None) -> str:
    if not cell:
        return ''
    low, high = cell['ci95']
    return f'{cell["median"]:.3f} [{low:.3f}, {high:.3f}]'


def _fmt(value) -> str:
    return f'{value:.4g}' if isinstance(value, (int, float)) else ''


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format='png', dpi=110)
    plt.close(fig)
    return buffer.getvalue()


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f2f2f2; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0; }} figcaption {{ font-size: 0.85em; color: #555; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print('usage: python -m fewshot_jax.analysis.report WORKDIR', file=sys.stderr)
        return 2
    try:
        print(write_report(argv[1]))
    except ReportError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
