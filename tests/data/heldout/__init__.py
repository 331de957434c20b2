"""Tests of the held-out benchmark families (fewshot_jax.data.heldout)."""
