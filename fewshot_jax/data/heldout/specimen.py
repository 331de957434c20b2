"""Specimen building blocks: support films, vitreous ice, granularity, particle placement.

A specimen is a dict material name -> projected thickness map (nm) on the
fine simulation grid, the input of `optics.form_image`.
"""

from __future__ import annotations

import math

import numpy as np

from fewshot_jax.data.heldout.optics import MATERIALS


def smooth_field(shape: tuple[int, int], pixel_nm: float, correlation_nm: float, rng: np.random.Generator):
    """A zero-mean, unit-variance Gaussian random field with a Gaussian correlation length.

    Args:
      shape: (H, W).
      pixel_nm: Grid spacing.
      correlation_nm: Length over which the field stays correlated.
      rng: Source of the white noise.

    Returns:
      float64 (H, W).
    """
    noise = rng.normal(size=shape)
    ky = np.fft.fftfreq(shape[0], d=pixel_nm)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=pixel_nm)[None, :]
    # Gaussian smoothing kernel exp(-r^2 / (2 l^2)) in Fourier space.
    kernel = np.exp(-2.0 * (np.pi * correlation_nm) ** 2 * (ky**2 + kx**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    field -= field.mean()
    return field / (field.std() + 1e-12)


def granular(
    thickness: np.ndarray, material: str, pixel_nm: float, structure: float, rng: np.random.Generator
) -> np.ndarray:
    """Adds the atom-count fluctuation of an amorphous material to its thickness.

    A pixel column of thickness t holds about n = rho t p^2 atoms (or
    molecules); if they were independent the count would be Poisson, with
    relative spread 1 / sqrt(n). Short-range order suppresses density
    fluctuations at nm wavelengths; `structure` (the structure factor there,
    0.05-0.3 for amorphous carbon and water) scales the variance down.
    This granularity is what makes Thon rings visible on carbon and ice.

    Args:
      thickness: Smooth thickness map (nm).
      material: Key of `optics.MATERIALS` (its number density is used).
      pixel_nm: Grid spacing.
      structure: Variance factor S in (0, 1].
      rng: Noise source.

    Returns:
      The thickness with granularity, clipped at 0.
    """
    rho = MATERIALS[material].number_density_nm3
    count = np.clip(thickness, 0.0, None) * rho * pixel_nm**2
    spread = np.sqrt(structure * count) / (rho * pixel_nm**2)
    return np.clip(thickness + spread * rng.normal(size=thickness.shape), 0.0, None)


def film(
    shape: tuple[int, int],
    pixel_nm: float,
    rng: np.random.Generator,
    *,
    mean_nm: float,
    rough_nm: float,
    correlation_nm: float,
    gradient_nm: float = 0.0,
) -> np.ndarray:
    """A support film or ice layer: mean thickness, smooth undulation and a linear wedge.

    Args:
      shape: (H, W).
      pixel_nm: Grid spacing.
      rng: Random source.
      mean_nm: Mean thickness.
      rough_nm: Standard deviation of the smooth undulation.
      correlation_nm: Its correlation length.
      gradient_nm: Thickness change across the field (ice is thinner at the
        middle of a hole, thicker near its rim), random direction.

    Returns:
      Thickness map (nm), >= 0.
    """
    t = mean_nm + rough_nm * smooth_field(shape, pixel_nm, correlation_nm, rng)
    if gradient_nm:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
        across = ((x - shape[1] / 2) * math.cos(angle) + (y - shape[0] / 2) * math.sin(angle)) / max(shape)
        t = t + gradient_nm * across
    return np.clip(t, 0.0, None)


def place(
    radii: np.ndarray,
    field_nm: tuple[float, float],
    rng: np.random.Generator,
    *,
    gap_nm: float = 1.0,
    tries: int = 60,
) -> list[np.ndarray]:
    """Random (x, y) centres of discs that do not overlap (particles resting on a film).

    Larger particles are placed first; one that finds no free spot in
    `tries` draws is left out, as a crowded grid square has fewer particles.

    Args:
      radii: Bounding radii (nm).
      field_nm: (start, end) in nm of the square the centres fall in.
      rng: Random source.
      gap_nm: Minimum distance between surfaces.
      tries: Draws per particle.

    Returns:
      Centres (2,) of the placed particles, in the order of `radii`; None
      for a particle that did not fit.
    """
    order = np.argsort(-np.asarray(radii))
    placed: list[tuple[np.ndarray, float]] = []
    centres: list = [None] * len(radii)
    for i in order:
        r = float(radii[i])
        for _ in range(tries):
            c = rng.uniform(field_nm[0], field_nm[1], size=2)
            if all(np.hypot(*(c - pc)) >= r + pr + gap_nm for pc, pr in placed):
                placed.append((c, r))
                centres[i] = c
                break
    return centres
