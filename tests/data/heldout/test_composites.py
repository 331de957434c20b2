"""The composites arrangements: chains touch in sequence, clusters touch a member, none overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fewshot_jax.data.heldout import FAMILIES, composites, labeled_image

FIELD = (10.0, 150.0)
HALF = 35.0


def _placed(kind: str, seed: int, n: int = 10, radius: float = 6.0):
    rng = np.random.default_rng(seed)
    centres, radii = [], []
    placed = composites._grow(kind, rng, [radius] * n, FIELD, HALF, centres, radii)
    return placed, centres, radii


def _touch(a, ra, b, rb) -> bool:
    return abs(math.dist(a, b) - (ra + rb)) < 1e-9


@pytest.mark.parametrize('kind', ['strings', 'aggregates', 'dispersed'])
def test_every_sphere_lies_in_the_section_and_none_overlap(kind):
    for seed in range(5):
        placed, centres, radii = _placed(kind, seed, n=1 if kind == 'dispersed' else 10)
        assert placed == len(centres) >= 1
        for c, r in zip(centres, radii, strict=True):
            assert FIELD[0] <= c[0] <= FIELD[1] and FIELD[0] <= c[1] <= FIELD[1]
            assert abs(c[2]) <= HALF - r + 1e-9
        for i in range(len(centres)):
            for j in range(i):
                # Touching allowed, with the builder's half-nm slack.
                assert math.dist(centres[i], centres[j]) >= radii[i] + radii[j] - 0.5 - 1e-9


def test_a_string_is_a_chain_of_touching_neighbours():
    for seed in range(5):
        placed, centres, radii = _placed('strings', seed)
        assert placed >= 4
        for i in range(1, placed):
            assert _touch(centres[i], radii[i], centres[i - 1], radii[i - 1])


def test_every_aggregate_member_touches_an_earlier_one_and_the_cluster_is_compact():
    spans = {}
    for kind in ('aggregates', 'strings'):
        spans[kind] = []
        for seed in range(5):
            placed, centres, radii = _placed(kind, seed)
            if kind == 'aggregates':
                for i in range(1, placed):
                    assert any(_touch(centres[i], radii[i], centres[j], radii[j]) for j in range(i))
            middle = np.mean(centres, axis=0)
            spans[kind].append(max(math.dist(c, middle) for c in centres))
    # Ten touching spheres: a cluster stays much smaller than a chain.
    assert np.mean(spans['aggregates']) < 0.6 * np.mean(spans['strings'])


def test_a_group_that_finds_no_room_places_nothing():
    rng = np.random.default_rng(0)
    # A section thinner than the particle: no sphere fits inside it.
    centres, radii = [], []
    assert composites._grow('strings', rng, [6.0] * 5, FIELD, 4.0, centres, radii) == 0
    assert centres == [] and radii == []


def test_every_class_draws_its_loading_and_section_from_the_same_ranges():
    family = FAMILIES['composites']
    assert family.classes == composites.COMPOSITE_CLASSES
    for label in range(3):
        _, info = labeled_image(family, label, 0, 32, seed=0)
        assert composites.LOADING[0] <= info['loading'] <= composites.LOADING[1]
        assert composites.SECTION_NM[0] <= info['section_nm'] <= composites.SECTION_NM[1]
        assert info['particles'] > 0
