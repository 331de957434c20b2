"""Bright-field TEM image formation: projected specimen -> wave -> CTF -> dose -> detector.

The chain, each step a function so tests can check it on its own:

1. `object_wave`: the specimen is given as projected thickness maps (nm),
   one per material. In the projection approximation the exit wave is
   psi = exp(i * phi - mu) with phase phi = sigma * V_projected (sigma the
   interaction constant, V_projected = sum over materials of mean inner
   potential x thickness) and amplitude term mu = sum t / (2 Lambda), Lambda
   the mean free path for scattering outside the objective aperture
   (mass-thickness contrast). For a weak object this is the usual
   weak-phase + amplitude object with amplitude contrast fraction
   A = kappa / sqrt(1 + kappa^2), kappa = 1 / (2 sigma V Lambda)
   (`Material.amplitude_contrast`).
2. `transfer`: the wave is multiplied in Fourier space by exp(-i chi(k)),
   the partial-coherence envelopes and the objective aperture. Envelopes on
   the wave are the quasi-coherent approximation: exact for the linear
   (scattered x unscattered) term, approximate for the quadratic one.
3. `expose`: |psi|^2, drift blur, Poisson shot noise at the dose in e-/A^2,
   then the detector: scintillator MTF, gain, read noise, offset, 16-bit
   quantisation.

Sign convention (Reimer; Williams & Carter): defocus < 0 is underfocus and
chi(k) = pi lambda df k^2 + 1/2 pi Cs lambda^3 k^4, so underfocus and
spherical aberration have opposite signs and balance at Scherzer defocus
df = -sqrt(4/3 Cs lambda), where chi has its minimum -2 pi / 3. The linear
CTF of a weak object is sqrt(1 - A^2) sin chi - A cos chi: negative at low
frequencies in underfocus, so dense objects appear dark.

Units: nm for lengths, nm^-1 for spatial frequencies, V for potentials,
rad for phases. numpy only; every random draw goes through the caller's
`np.random.Generator`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

# CODATA 2018 exact / recommended values (SI).
PLANCK = 6.62607015e-34
ELECTRON_MASS = 9.1093837015e-31
ELEMENTARY_CHARGE = 1.602176634e-19
LIGHT_SPEED = 299792458.0

# The 16-bit camera range and the documented level of the empty beam: the
# operator picks the exposure so the vacuum/support level sits well inside the
# 16-bit range (no saturation, several thousand counts of headroom).
ADU_MAX = 65535
BACKGROUND_ADU = (3000.0, 30000.0)
OFFSET_ADU = (100.0, 1000.0)


def wavelength_nm(volts: float) -> float:
    """Relativistic electron wavelength in nm (200 kV -> 0.002508 nm = 2.508 pm)."""
    energy = ELEMENTARY_CHARGE * volts
    rest = ELECTRON_MASS * LIGHT_SPEED**2
    momentum = math.sqrt(2.0 * ELECTRON_MASS * energy * (1.0 + energy / (2.0 * rest)))
    return PLANCK / momentum * 1e9


def interaction_constant(volts: float) -> float:
    """sigma in rad / (V nm): phase per volt of projected potential per nm.

    sigma = 2 pi m e lambda / h^2 with the relativistic mass m; 200 kV gives
    0.00729 rad / (V nm), the C_E = 7.29e6 rad / (V m) of electron holography.
    """
    gamma = 1.0 + ELEMENTARY_CHARGE * volts / (ELECTRON_MASS * LIGHT_SPEED**2)
    lam = wavelength_nm(volts) * 1e-9
    per_volt_metre = 2.0 * math.pi * gamma * ELECTRON_MASS * ELEMENTARY_CHARGE * lam / PLANCK**2
    return per_volt_metre * 1e-9


@dataclasses.dataclass(frozen=True)
class Material:
    """An amorphous or polycrystalline material seen at low resolution.

    Attributes:
      name: Short name.
      inner_potential_v: Mean inner potential V0 in volts (electron
        holography values: carbon ~9-10 V, ice ~3.5-4.5 V, gold ~22-30 V).
      free_path_nm: Mean free path for scattering outside a typical
        objective aperture at 200 kV (intensity falls as exp(-t / Lambda)).
      number_density_nm3: Scattering units (atoms, molecules) per nm^3; sets
        the granularity of the projected potential of amorphous matter.
    """

    name: str
    inner_potential_v: float
    free_path_nm: float
    number_density_nm3: float

    def amplitude_contrast(self, volts: float = 200e3) -> float:
        """The equivalent amplitude contrast fraction A of this material."""
        kappa = 1.0 / (2.0 * interaction_constant(volts) * self.inner_potential_v * self.free_path_nm)
        return kappa / math.sqrt(1.0 + kappa**2)


# Values are round literature figures at 200 kV; free paths include elastic
# scattering beyond a ~10 mrad objective aperture (heavy metals) and stay long
# for light matter, whose contrast is mostly phase contrast.
MATERIALS = {
    'vacuum': Material('vacuum', 0.0, math.inf, 0.0),
    'ice': Material('ice', 4.5, 300.0, 31.0),
    'carbon': Material('carbon', 9.5, 200.0, 100.0),
    'amphiphile': Material('amphiphile', 6.5, 250.0, 60.0),
    'polymer': Material('polymer', 8.0, 220.0, 49.0),
    'silica': Material('silica', 10.0, 120.0, 66.0),
    'magnetite': Material('magnetite', 17.0, 45.0, 100.0),
    'silver': Material('silver', 20.0, 28.0, 58.0),
    'gold_silver': Material('gold_silver', 23.0, 20.0, 59.0),
    'gold': Material('gold', 25.0, 15.0, 59.0),
}


@dataclasses.dataclass(frozen=True)
class Optics:
    """Microscope and focus settings of one exposure.

    Attributes:
      voltage_v: Accelerating voltage (200 kV: lambda = 2.51 pm).
      cs_mm: Spherical aberration (uncorrected objective lenses: 0.5-2.7 mm).
      defocus_nm: Mean defocus, negative = underfocus.
      astigmatism_nm: Difference between the two principal defoci.
      astigmatism_angle: Azimuth of the first principal axis, rad.
      focal_spread_nm: rms focal spread from chromatic aberration
        (Cc ~1.2-2.7 mm x energy spread 0.7-1.5 eV / 200 keV: 3-10 nm).
      illumination_mrad: Illumination semi-angle alpha (spatial coherence).
      aperture_mrad: Objective aperture semi-angle.
    """

    voltage_v: float = 200e3
    cs_mm: float = 1.0
    defocus_nm: float = -1500.0
    astigmatism_nm: float = 0.0
    astigmatism_angle: float = 0.0
    focal_spread_nm: float = 5.0
    illumination_mrad: float = 0.1
    aperture_mrad: float = 10.0


def frequencies(shape: tuple[int, int], pixel_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (ky, kx) in nm^-1 of an FFT grid, broadcastable."""
    ky = np.fft.fftfreq(shape[0], d=pixel_nm)[:, None]
    kx = np.fft.fftfreq(shape[1], d=pixel_nm)[None, :]
    return ky, kx


def aberration_phase(ky: np.ndarray, kx: np.ndarray, optics: Optics) -> np.ndarray:
    """chi(k) = pi lambda df(azimuth) k^2 + 1/2 pi Cs lambda^3 k^4, in rad."""
    lam = wavelength_nm(optics.voltage_v)
    k2 = ky**2 + kx**2
    azimuth = np.arctan2(ky, kx)
    # Two-fold astigmatism: the defocus depends on the azimuth of k.
    defocus = optics.defocus_nm + 0.5 * optics.astigmatism_nm * np.cos(
        2.0 * (azimuth - optics.astigmatism_angle)
    )
    cs = optics.cs_mm * 1e6
    return np.pi * lam * defocus * k2 + 0.5 * np.pi * cs * lam**3 * k2**2


def envelope(ky: np.ndarray, kx: np.ndarray, optics: Optics) -> np.ndarray:
    """Temporal x spatial partial-coherence envelope (Gaussian source, Gaussian focal spread).

    E_t = exp(-1/2 (pi lambda Delta k^2)^2) damps with the focal spread Delta;
    E_s = exp(-(pi alpha / lambda)^2 (lambda df k + Cs lambda^3 k^3)^2) with the
    illumination semi-angle alpha, i.e. the gradient of chi blurred over the
    cone of incident directions.
    """
    lam = wavelength_nm(optics.voltage_v)
    k2 = ky**2 + kx**2
    k = np.sqrt(k2)
    temporal = np.exp(-0.5 * (np.pi * lam * optics.focal_spread_nm * k2) ** 2)
    alpha = optics.illumination_mrad * 1e-3
    gradient = lam * optics.defocus_nm * k + optics.cs_mm * 1e6 * lam**3 * k**3
    spatial = np.exp(-((np.pi * alpha / lam) ** 2) * gradient**2)
    return temporal * spatial


def ctf(ky: np.ndarray, kx: np.ndarray, optics: Optics, amplitude_contrast: float) -> np.ndarray:
    """Linear contrast transfer function of a weak phase + amplitude object.

    For psi = exp((i - kappa) phi) with phi << 1 the image is
    I = 1 + 2 / sqrt(1 - A^2) * IFFT[FFT(phi) * ctf], A = kappa / sqrt(1 + kappa^2).

    Returns:
      (sqrt(1 - A^2) sin chi - A cos chi) x envelope, same shape as k.
    """
    chi = aberration_phase(ky, kx, optics)
    a = amplitude_contrast
    return (np.sqrt(1.0 - a * a) * np.sin(chi) - a * np.cos(chi)) * envelope(ky, kx, optics)


def object_wave(
    thickness: Mapping[str, np.ndarray],
    pixel_nm: float,
    *,
    voltage_v: float = 200e3,
    aperture_mrad: float = 10.0,
    materials: Mapping[str, Material] = MATERIALS,
) -> np.ndarray:
    """Exit wave exp(i phi - mu) of projected thickness maps (projection approximation).

    Where the local phase gradient deflects electrons beyond what the grid can
    hold (80% of its Nyquist frequency) or beyond the objective aperture, the
    electrons are removed (geometric optics): the edges of thick metal
    particles then scatter out of the image as they do in a microscope,
    instead of folding back as aliased fringes.

    Args:
      thickness: Material name -> projected thickness map (nm), equal shapes.
      pixel_nm: Grid spacing.
      voltage_v: Accelerating voltage.
      aperture_mrad: Objective aperture semi-angle.
      materials: Material table.

    Returns:
      complex128 wave of the maps' shape.
    """
    sigma = interaction_constant(voltage_v)
    maps = list(thickness.items())
    phase = np.zeros_like(maps[0][1], dtype=np.float64)
    mu = np.zeros_like(phase)
    for name, t in maps:
        m = materials[name]
        phase += sigma * m.inner_potential_v * t
        if math.isfinite(m.free_path_nm):
            mu += t / (2.0 * m.free_path_nm)
    lam = wavelength_nm(voltage_v)
    k_cut = min(aperture_mrad * 1e-3 / lam, 0.8 / (2.0 * pixel_nm))
    gy, gx = np.gradient(phase, pixel_nm)
    # Local deflection as a spatial frequency is |grad phi| / (2 pi); the
    # intensity kept falls off as 1 / (1 + (k_local / k_cut)^8).
    ratio2 = (gy * gy + gx * gx) / (2.0 * np.pi * k_cut) ** 2
    amplitude = np.exp(-mu) / np.sqrt(1.0 + ratio2**4)
    wave = np.empty(phase.shape, np.complex128)
    wave.real = amplitude * np.cos(phase)
    wave.imag = amplitude * np.sin(phase)
    return wave


def transfer(wave: np.ndarray, pixel_nm: float, optics: Optics) -> np.ndarray:
    """The image wave: FFT, x exp(-i chi) x envelope x aperture, inverse FFT."""
    ky, kx = frequencies(wave.shape, pixel_nm)
    lam = wavelength_nm(optics.voltage_v)
    chi = aberration_phase(ky, kx, optics)
    passed = (ky**2 + kx**2) <= (optics.aperture_mrad * 1e-3 / lam) ** 2
    damping = envelope(ky, kx, optics) * passed
    h = np.empty(chi.shape, np.complex128)
    h.real = damping * np.cos(chi)
    h.imag = -damping * np.sin(chi)
    return np.fft.ifft2(np.fft.fft2(wave) * h)


def bin_pixels(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks: a detector pixel integrates its area."""
    h, w = image.shape
    return image.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def drift_blur(image: np.ndarray, length_px: float, angle: float) -> np.ndarray:
    """Uniform linear specimen drift during the exposure (a sinc in Fourier space)."""
    if length_px <= 0:
        return image
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.rfftfreq(image.shape[1])[None, :]
    along = length_px * (kx * math.cos(angle) + ky * math.sin(angle))
    return np.fft.irfft2(np.fft.rfft2(image) * np.sinc(along), s=image.shape)


@dataclasses.dataclass(frozen=True)
class Detector:
    """Dose and camera settings of one exposure.

    Attributes:
      dose_e_per_a2: Electrons per A^2 (cryo low dose 10-40, materials 20-100+).
      background_adu: Mean counts of the unobstructed beam (sets the gain).
      offset_adu: Dark level added by the camera electronics.
      read_noise_adu: rms Gaussian read noise.
      mtf_half: Frequency (cycles / pixel) where the scintillator MTF is 1/2.
      drift_px: Specimen drift during the exposure, detector pixels.
      drift_angle: Drift direction, rad.
      illumination_tilt: Relative change of the beam intensity across the
        field (an uneven condenser illumination), signed.
      tilt_angle: Direction of that change, rad.
    """

    dose_e_per_a2: float = 40.0
    background_adu: float = 10000.0
    offset_adu: float = 300.0
    read_noise_adu: float = 4.0
    mtf_half: float = 0.35
    drift_px: float = 0.0
    drift_angle: float = 0.0
    illumination_tilt: float = 0.0
    tilt_angle: float = 0.0


def expose(
    intensity: np.ndarray, pixel_nm: float, detector: Detector, rng: np.random.Generator
) -> np.ndarray:
    """Counts electrons and reads them out as a 16-bit image.

    Args:
      intensity: |psi|^2 on the detector grid, 1 = unobstructed beam.
      pixel_nm: Detector pixel size referred to the specimen.
      detector: Dose and camera settings.
      rng: Source of the shot and read noise.

    Returns:
      uint16 image of intensity's shape.
    """
    h, w = intensity.shape
    image = drift_blur(intensity, detector.drift_px, detector.drift_angle)
    y, x = np.mgrid[0:h, 0:w]
    across = (
        (x - w / 2) * math.cos(detector.tilt_angle) + (y - h / 2) * math.sin(detector.tilt_angle)
    ) / max(h, w)
    image = image * (1.0 + detector.illumination_tilt * across)
    electrons_per_pixel = detector.dose_e_per_a2 * (pixel_nm * 10.0) ** 2
    electrons = rng.poisson(np.clip(image, 0.0, None) * electrons_per_pixel).astype(np.float64)
    # The scintillator spreads each electron's light, shot noise included, so
    # the MTF acts on the counted signal, after the Poisson draw.
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    mtf = 1.0 / (1.0 + (ky**2 + kx**2) / detector.mtf_half**2)
    electrons = np.fft.irfft2(np.fft.rfft2(electrons) * mtf, s=(h, w))
    gain = detector.background_adu / electrons_per_pixel
    adu = electrons * gain + detector.offset_adu + rng.normal(0.0, detector.read_noise_adu, size=(h, w))
    return np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)


def form_image(
    thickness: Mapping[str, np.ndarray],
    pixel_nm: float,
    optics: Optics,
    detector: Detector,
    rng: np.random.Generator,
    *,
    crop: int = 0,
    binning: int = 2,
) -> np.ndarray:
    """The whole chain: thickness maps on a fine grid -> 16-bit detector image.

    Args:
      thickness: Material name -> projected thickness (nm) on the fine grid.
      pixel_nm: Fine grid spacing; the detector pixel is `binning` times it.
      optics: Microscope and focus.
      detector: Dose and camera.
      rng: Noise source.
      crop: Fine-grid pixels dropped on every side after the optics: the
        FFT treats the field as periodic, so a margin keeps the defocus
        fringes of one edge from wrapping onto the other.
      binning: Fine pixels per detector pixel along each axis.

    Returns:
      uint16 (H, W) with H = (fine height - 2 crop) / binning.
    """
    wave = object_wave(thickness, pixel_nm, voltage_v=optics.voltage_v, aperture_mrad=optics.aperture_mrad)
    intensity = np.abs(transfer(wave, pixel_nm, optics)) ** 2
    if crop:
        intensity = intensity[crop:-crop, crop:-crop]
    intensity = bin_pixels(intensity, binning)
    return expose(intensity, pixel_nm * binning, detector, rng)
