"""Analyses of masks and embeddings (percolation, anchors, plots, reports)."""
