"""The statistics behind the held-out transfer tables (benchmarks/heldout_transfer.py), checked
against plain loops over seeds and splits."""

import math
from pathlib import Path

import pytest

from tests.helpers.benchmarks import load_benchmark


@pytest.fixture(scope='module')
def transfer():
    return load_benchmark('heldout_transfer')


def _table(pretrained, init, texture):
    """One seed's {encoder: {k: {split: accuracy}}} at k = 8 from three lists over splits."""
    return {
        name: {8: dict(enumerate(values))}
        for name, values in (('pretrained', pretrained), ('init', init), ('texture', texture))
    }


TABLES = [
    _table([0.6, 0.7, 0.5], [0.4, 0.3, 0.4], [0.6, 0.6, 0.6]),
    _table([0.5, 0.5, 0.8], [0.4, 0.5, 0.3], [0.7, 0.5, 0.6]),
    _table([0.9, 0.4, 0.6], [0.3, 0.3, 0.3], [0.5, 0.6, 0.7]),
]


def test_per_seed_gaps_are_each_seeds_mean_over_its_splits(transfer):
    expected = []
    for table in TABLES:
        vs_init = vs_texture = 0.0
        for split in range(3):
            vs_init += table['pretrained'][8][split] - table['init'][8][split]
            vs_texture += table['pretrained'][8][split] - table['texture'][8][split]
        expected.append((vs_init / 3, vs_texture / 3))
    got = transfer.per_seed_gaps(TABLES, 'pretrained', 8)
    assert [g for pair in got for g in pair] == pytest.approx([e for pair in expected for e in pair])


def test_paired_gap_over_seeds_is_a_t_interval_of_the_seed_means(transfer):
    seed_means = [gap for gap, _ in transfer.per_seed_gaps(TABLES, 'pretrained', 8)]
    mean = sum(seed_means) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in seed_means) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    over, (got_mean, low, high) = transfer.paired(TABLES, 'pretrained', 'init', 8)
    assert over == '3 seeds'
    assert (got_mean, low, high) == pytest.approx((mean, mean - half, mean + half))


def test_one_seed_is_an_interval_over_its_splits(transfer):
    over, (mean, low, high) = transfer.paired(TABLES[:1], 'pretrained', 'texture', 8)
    gaps = [0.0, 0.1, -0.1]
    sd = math.sqrt(sum(g * g for g in gaps) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)
    assert over == '1 seed × 3 splits'
    assert (mean, low, high) == pytest.approx((0.0, -half, half))


def _write_probe(
    workdir: Path, accuracy_by_split: list[float], init_by_split: list[float] | None = None
) -> Path:
    """A probe workdir whose results.csv holds the pretrained encoder's k = 8 protocol runs
    and its init's (0.0 unless given), plus rows of another head the comparison must ignore."""
    (workdir / 'probe').mkdir(parents=True)
    lines = ['head,mode,encoder,k,split_seed,accuracy']
    init_by_split = init_by_split or [0.0] * len(accuracy_by_split)
    for split, (accuracy, init) in enumerate(zip(accuracy_by_split, init_by_split, strict=True)):
        lines.append(f'logistic,protocol,pretrained,8,{split},{accuracy}')
        lines.append(f'logistic,protocol,init,8,{split},{init}')
        lines.append(f'knn,protocol,pretrained,8,{split},1.0')
    (workdir / 'probe' / 'results.csv').write_text('\n'.join(lines) + '\n')
    return workdir


def test_compare_pairs_two_recipes_split_by_split_within_each_seed(tmp_path):
    compare = load_benchmark('heldout_compare')
    a_runs = [[0.6, 0.7, 0.5], [0.5, 0.9, 0.4]]
    b_runs = [[0.5, 0.7, 0.2], [0.6, 0.6, 0.6]]
    a = [_write_probe(tmp_path / f'a{s}', acc) for s, acc in enumerate(a_runs)]
    b = [_write_probe(tmp_path / f'b{s}', acc) for s, acc in enumerate(b_runs)]
    tables = compare.paired_tables(a, b)
    over, (mean, _, _) = compare.paired(tables, 'a', 'b', 8)
    seed_means = [
        sum(x - y for x, y in zip(ra, rb, strict=True)) / 3 for ra, rb in zip(a_runs, b_runs, strict=True)
    ]
    assert over == '2 seeds'
    assert mean == pytest.approx(sum(seed_means) / 2)
    with pytest.raises(SystemExit, match='expected one per seed'):
        compare.paired_tables(a, b[:1])


def test_compare_relative_to_the_init_pairs_the_gaps_over_it(tmp_path):
    compare = load_benchmark('heldout_compare')
    a = [_write_probe(tmp_path / 'a0', [0.6, 0.7], init_by_split=[0.4, 0.6])]
    b = [_write_probe(tmp_path / 'b0', [0.5, 0.5], init_by_split=[0.2, 0.3])]
    tables = compare.paired_tables(a, b, relative_to='init')
    _, (mean, _, _) = compare.paired(tables, 'a', 'b', 8)
    # Gaps over the init: a 0.2, 0.1; b 0.3, 0.2 → a − b = −0.1 on both splits.
    assert mean == pytest.approx(-0.1)
    with pytest.raises(SystemExit, match="no encoder named 'texture'"):
        compare.paired_tables(a, b, relative_to='texture')
