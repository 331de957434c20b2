"""The data layer: file readers, sources, the synthetic TEM benchmark, splits, Grain pipelines."""
