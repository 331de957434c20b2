"""The report's sentences built from summary files."""


def test_the_report_says_what_selection_buys_at_small_k():
    from fewshot_jax.analysis.report import _selection_sentence

    cell = {'gap_mean': 0.05, 'ci95': [0.01, 0.09]}
    selection = {'SimCLR': {'typical': {'1': cell, '2': dict(cell, ci95=[None, None]), '8': cell}}}
    sentence = _selection_sentence('nanowires', selection)
    assert sentence.startswith('nanowires: choosing which images to label from the SimCLR features')
    assert 'typical: k=1 +0.050 [+0.010, +0.090], k=2 +0.050.' in sentence
    assert 'k=8' not in sentence
    assert 'no selection strategy' in _selection_sentence('viruses', {'SimCLR': {'typical': {'8': cell}}})
