"""Analyses of results: anchors, plots, reports (mask geometry itself is `fewshot_jax.masks`)."""
