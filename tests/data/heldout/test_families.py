"""Tests of the held-out benchmark families: optics, projections, rendering, folders on disk."""

import math

import numpy as np
import pytest
import tifffile

from fewshot_jax.data import sources
from fewshot_jax.data.heldout import FAMILIES, labeled_image, optics, unlabeled_image
from fewshot_jax.data.heldout import projection as proj
from fewshot_jax.data.heldout.write import main as write_main

SIZE = 32


def _textbook_wavelength_nm(volts):
    # lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2))), constants written out here.
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    return h / math.sqrt(2 * m0 * e * volts * (1 + e * volts / (2 * m0 * c * c))) * 1e9


def test_wavelength_and_interaction_constant_at_200kv():
    assert optics.wavelength_nm(200e3) == pytest.approx(0.0025079, abs=2e-7)  # 2.508 pm
    assert optics.wavelength_nm(200e3) == pytest.approx(_textbook_wavelength_nm(200e3), rel=1e-12)
    # Electron holography's C_E at 200 kV: 7.29e6 rad / (V m).
    assert optics.interaction_constant(200e3) == pytest.approx(7.29e-3, rel=2e-3)


def test_ctf_matches_plain_loop_textbook_formula():
    o = optics.Optics(cs_mm=1.2, defocus_nm=-1800.0, focal_spread_nm=0.0, illumination_mrad=0.0)
    a = 0.07
    lam = _textbook_wavelength_nm(200e3)
    points = [(0.0, 0.1), (0.3, 0.0), (0.25, -0.4), (-0.9, 1.3), (2.0, 2.0)]
    for ky, kx in points:
        k2 = ky * ky + kx * kx
        chi = math.pi * lam * o.defocus_nm * k2 + 0.5 * math.pi * o.cs_mm * 1e6 * lam**3 * k2 * k2
        expected = math.sqrt(1 - a * a) * math.sin(chi) - a * math.cos(chi)
        got = optics.ctf(np.array([[ky]]), np.array([[kx]]), o, a)[0, 0]
        assert got == pytest.approx(expected, abs=1e-9)
    # Underfocus: dense objects dark, i.e. the CTF is negative at low frequency.
    assert optics.ctf(np.array([[0.0]]), np.array([[0.2]]), o, a)[0, 0] < 0


def test_envelopes_match_plain_loop():
    o = optics.Optics(cs_mm=1.0, defocus_nm=-1000.0, focal_spread_nm=6.0, illumination_mrad=0.2)
    lam = _textbook_wavelength_nm(200e3)
    cs = o.cs_mm * 1e6
    for k in (0.1, 0.5, 1.0, 2.0):
        temporal = math.exp(-0.5 * (math.pi * lam * o.focal_spread_nm * k * k) ** 2)
        spatial = math.exp(
            -((math.pi * 0.2e-3 / lam) ** 2) * (lam * o.defocus_nm * k + cs * lam**3 * k**3) ** 2
        )
        got = optics.envelope(np.array([[0.0]]), np.array([[k]]), o)[0, 0]
        assert got == pytest.approx(temporal * spatial, rel=1e-9)


def test_scherzer_defocus_balances_spherical_aberration():
    # With defocus < 0 meaning underfocus, chi has its minimum -2 pi / 3 at
    # Scherzer defocus -sqrt(4/3 Cs lambda): the two terms have opposite signs.
    cs_mm = 1.0
    lam = optics.wavelength_nm(200e3)
    df = -math.sqrt(4.0 / 3.0 * cs_mm * 1e6 * lam)
    k = np.linspace(0.0, 6.0, 60001)[None, :]
    chi = optics.aberration_phase(np.zeros_like(k), k, optics.Optics(cs_mm=cs_mm, defocus_nm=df))
    assert chi.min() == pytest.approx(-2 * math.pi / 3, abs=1e-6)


def test_astigmatism_changes_defocus_along_its_axis():
    o = optics.Optics(cs_mm=0.0, defocus_nm=-1000.0, astigmatism_nm=200.0, astigmatism_angle=0.0)
    lam = optics.wavelength_nm(200e3)
    k = 0.5
    along_x = optics.aberration_phase(np.array([[0.0]]), np.array([[k]]), o)[0, 0]
    along_y = optics.aberration_phase(np.array([[k]]), np.array([[0.0]]), o)[0, 0]
    assert along_x == pytest.approx(math.pi * lam * -900.0 * k * k)
    assert along_y == pytest.approx(math.pi * lam * -1100.0 * k * k)


def test_weak_object_image_follows_the_linear_ctf():
    # A thin carbon blob: the full-wave image must match 1 + 2 / sqrt(1 - A^2) IFFT[FFT(phi) ctf].
    n, pixel = 64, 0.5
    y, x = (np.mgrid[0:n, 0:n] + 0.5) * pixel
    t = 0.3 * np.exp(-((x - 16) ** 2 + (y - 16) ** 2) / (2 * 2.0**2))
    o = optics.Optics(defocus_nm=-800.0, aperture_mrad=100.0)
    wave = optics.object_wave({'carbon': t}, pixel, aperture_mrad=100.0)
    full = np.abs(optics.transfer(wave, pixel, o)) ** 2
    carbon = optics.MATERIALS['carbon']
    a = carbon.amplitude_contrast()
    phi = optics.interaction_constant(200e3) * carbon.inner_potential_v * t
    ky, kx = optics.frequencies((n, n), pixel)
    linear = 1 + 2 / math.sqrt(1 - a * a) * np.fft.ifft2(np.fft.fft2(phi) * optics.ctf(ky, kx, o, a)).real
    contrast = np.abs(linear - 1).max()
    assert contrast > 1e-3
    assert np.abs(full - linear).max() < 0.05 * contrast


def test_sphere_chord_is_analytic():
    r_sphere = 7.0
    body = proj.sphere(np.array([10.0, -3.0, 4.0]), r_sphere)
    r = np.array([0.0, 1.0, 3.5, 6.9, 7.0, 7.5, 20.0])
    x, y = 10.0 + r * math.cos(0.4), -3.0 + r * math.sin(0.4)
    expected = 2 * np.sqrt(np.clip(r_sphere**2 - r**2, 0, None))
    # Tangent lines (r = R) give a chord of rounding size only.
    np.testing.assert_allclose(proj.chord_lengths(body, x, y), expected, atol=1e-6)


def _brute_force_chords(body, xs, ys, inside, dz=0.01):
    out = []
    zs = np.arange(-40.0, 40.0, dz) + body.center[2]
    for x, y in zip(xs, ys, strict=True):
        count = 0
        for z in zs:
            count += inside(np.array([x, y, z]) - body.center)
        out.append(count * dz)
    return np.array(out)


def test_rotated_cube_and_tube_chords_match_brute_force():
    rot = proj.random_rotation(np.random.default_rng(3))
    normals, offsets, bound = proj.cuboid_111((4.0, 4.0, 4.0), 2.0)  # no corner cut: a plain cube
    cube = proj.polyhedron(np.zeros(3), normals, offsets, rot, radius=bound)
    xs, ys = np.array([0.0, 1.5, -2.5, 3.0]), np.array([0.0, -1.0, 2.0, 3.5])

    def in_cube(p):
        return bool(np.all(np.abs(rot.T @ p) <= 4.0))

    np.testing.assert_allclose(
        proj.chord_lengths(cube, xs, ys), _brute_force_chords(cube, xs, ys, in_cube), atol=0.03
    )
    # A straight horizontal tube along x: chord 2 sqrt(a^2 - d^2) away from the ends.
    pieces = proj.tube(
        np.array([[-10.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [4.0, 0.0, 0.0], [10.0, 0.0, 0.0]]), 2.0
    )
    d = np.array([0.0, 1.0, 1.9, 2.5])
    for x in (-6.5, 0.5, 7.0):
        total = sum(proj.chord_lengths(p, np.full(4, x), d) for p in pieces)
        np.testing.assert_allclose(total, 2 * np.sqrt(np.clip(4.0 - d**2, 0, None)), atol=1e-9)
    # Beyond the last point the hemispherical cap: at distance 1 along the axis, chord 2 sqrt(3).
    cap = sum(proj.chord_lengths(p, np.array([11.0]), np.array([0.0])) for p in pieces)
    np.testing.assert_allclose(cap, [2 * math.sqrt(3.0)], atol=1e-9)


def test_curved_tube_volume_is_cross_section_times_length():
    # Mitred pieces tile a bent tube without gaps or overlaps, so the integral
    # of its projected thickness is pi a^2 L plus the two hemispherical caps.
    rng = np.random.default_rng(0)
    steps = [np.array([1.0, 0.0, 0.0])]
    for _ in range(11):
        turn = rng.normal(size=3) * 0.25
        nxt = steps[-1] + turn - (turn @ steps[-1]) * steps[-1]
        steps.append(nxt / np.linalg.norm(nxt))
    points = np.cumsum([np.zeros(3)] + [2.0 * u for u in steps], axis=0) + np.array([8.0, 20.0, 0.0])
    radius, pixel = 1.5, 0.1
    thickness = proj.render([(b, 1.0) for b in proj.tube(points, radius)], (400, 400), pixel, subsample=1)
    expected = math.pi * radius**2 * 2.0 * len(steps) + 4.0 / 3.0 * math.pi * radius**3
    assert thickness.sum() * pixel**2 == pytest.approx(expected, rel=2e-3)


def test_sphere_and_hollow_shell_differ_at_the_centre():
    outer, inner, pixel = 10.0, 7.0, 0.5
    centre = np.array([16.0, 16.0, 0.0])
    solid = proj.render([(proj.sphere(centre, outer), 1.0)], (64, 64), pixel, subsample=1)
    shell = proj.render(
        [(proj.sphere(centre, outer), 1.0), (proj.sphere(centre, inner), -1.0)], (64, 64), pixel, subsample=1
    )
    # Pixel (31, 31) has its centre 0.25 nm from the sphere centre.
    r = math.hypot(0.25, 0.25)
    assert solid[31, 31] == pytest.approx(2 * math.sqrt(outer**2 - r**2))
    assert shell[31, 31] == pytest.approx(2 * (math.sqrt(outer**2 - r**2) - math.sqrt(inner**2 - r**2)))
    assert shell[31, 31] < 0.5 * solid[31, 31]
    # Near the inner radius the shell is seen edge-on: thicker there than at its centre.
    assert shell[31, 31 + 13] > 1.5 * shell[31, 31]
    # Equal outside the shell.
    np.testing.assert_allclose(solid[:, :8], shell[:, :8])


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_rendering_is_deterministic_per_seed(name):
    family = FAMILIES[name]
    a, info_a = labeled_image(family, 1, 0, SIZE, seed=5)
    b, info_b = labeled_image(family, 1, 0, SIZE, seed=5)
    c, _ = labeled_image(family, 1, 0, SIZE, seed=6)
    np.testing.assert_array_equal(a, b)
    assert info_a == info_b
    assert not np.array_equal(a, c)
    u1, _ = unlabeled_image(family, 2, SIZE, seed=5)
    u2, _ = unlabeled_image(family, 2, SIZE, seed=5)
    np.testing.assert_array_equal(u1, u2)


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_images_are_16_bit_in_the_documented_range(name):
    family = FAMILIES[name]
    lo = optics.OFFSET_ADU[0] + 0.5 * optics.BACKGROUND_ADU[0]
    hi = optics.OFFSET_ADU[1] + 1.1 * optics.BACKGROUND_ADU[1]
    for label in range(len(family.classes)):
        for index in range(2):
            image, _ = labeled_image(family, label, index, SIZE, seed=0)
            assert image.dtype == np.uint16 and image.shape == (SIZE, SIZE)
            # No clipping at either end of the 16-bit range, and the support
            # level (the median) inside the documented background range.
            assert 0 < image.min() and image.max() < optics.ADU_MAX
            assert lo <= np.median(image) <= hi


def test_written_folders_load_through_the_project_sources(tmp_path):
    out = tmp_path / 'crystals'
    argv = [
        '--family=crystals',
        f'--out={out}',
        '--unlabeled=5',
        '--per_class=3',
        f'--size={SIZE}',
        '--seed=1',
    ]
    assert write_main(argv) == 0
    unlabeled = sources.UnlabeledFolderSource(out / 'unlabeled')
    labeled = sources.ClassFolderSource(out / 'labeled')
    assert len(unlabeled) == 5 and unlabeled.skipped == {}
    assert labeled.class_names == ('cube', 'octahedron', 'rod')
    np.testing.assert_array_equal(np.bincount(labeled.labels), [3, 3, 3])
    record = labeled[4]
    assert record['image'].shape == (SIZE, SIZE) and record['label'] == 1
    assert 0.0 <= record['image'].min() and record['image'].max() <= 1.0
    raw = tifffile.imread(out / 'labeled' / 'octahedron' / 'octahedron_00001.tif')
    assert raw.dtype == np.uint16
    # The file is the image the library renders for (class, index, seed).
    np.testing.assert_array_equal(raw, labeled_image(FAMILIES['crystals'], 1, 1, SIZE, seed=1)[0])
    assert (out / 'manifest.json').is_file()
