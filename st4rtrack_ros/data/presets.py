"""Named presets for the synthetic benchmark scenes.

A preset fixes everything about a sequence except the seed, the frame count and the resolution, so that a
(preset, seed) pair names one reproducible benchmark sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Texture families used for training-like data; `shift` swaps to :data:`SHIFT_TEXTURES`.
BASE_TEXTURES: tuple[str, ...] = ("noise", "checker", "stripes", "grid")
#: Texture families unseen in the base presets, for domain-shift evaluation.
SHIFT_TEXTURES: tuple[str, ...] = ("marble", "brick", "dots", "noise_hf")
#: Real photographs (``data.photos``: CC0 / public-domain images) and two procedural families for plainer surfaces.
PHOTO_TEXTURES: tuple[str, ...] = ("photo", "photo", "photo", "noise", "marble")


@dataclass(frozen=True)
class NuisanceParams:
    """Image-formation nuisances; all zero means a clean, exact render."""

    noise_std: float = 0.0  # additive Gaussian read noise, in [0, 1] intensity units
    shot_noise: float = 0.0  # Poisson-like noise scale: std = shot_noise * sqrt(intensity)
    motion_blur_px: float = 0.0  # length of the linear blur kernel, in pixels, scaled by image-space motion
    exposure_jitter: float = 0.0  # per-frame log2 exposure change (std)
    exposure_drift: float = 0.0  # amplitude of a slow exposure oscillation (log2 units)
    color_jitter: float = 0.0  # per-channel gain change (std) → white-balance shifts
    gamma_jitter: float = 0.0  # std of the gamma exponent around 1
    vignette: float = 0.0  # fractional darkening at the image corners
    # JPEG compression as a camera's or a bag's: each frame's quality drawn uniformly from this range (None: off).
    jpeg_quality: tuple[int, int] | None = None


@dataclass(frozen=True)
class Preset:
    """Scene, motion and nuisance parameters of one benchmark family."""

    name: str
    fps: float = 10.0
    # Camera (a ground robot): forward speed m/s, yaw-rate amplitude rad/s, bob amplitude m and frequency Hz.
    cam_speed: float = 0.5
    yaw_rate_amp: float = 0.35
    bob_amp: float = 0.01
    bob_freq: float = 1.5
    cam_height: float = 0.6
    cam_pitch_deg: float = 6.0  # looks slightly down, in degrees
    hfov_deg: float = 70.0
    # Room and static content.
    room_size: tuple[float, float, float] = (14.0, 10.0, 3.0)
    n_static_boxes: int = 10
    # Moving rigid objects.
    n_objects: int = 3
    obj_speed: tuple[float, float] = (0.3, 0.7)  # m/s, uniform range
    obj_spin: tuple[float, float] = (0.2, 0.8)  # rad/s, uniform range
    obj_size: tuple[float, float] = (0.25, 0.6)  # half extent range, m
    obj_distance: tuple[float, float] = (2.0, 4.5)  # distance ahead of the camera when crossing its view, m
    textures: tuple[str, ...] = BASE_TEXTURES
    nuisance: NuisanceParams = field(default_factory=NuisanceParams)


#: The sensor nuisances of `shift` (and, with JPEG on top, of `photo`).
SHIFT_NUISANCE = NuisanceParams(
    noise_std=0.02,
    shot_noise=0.03,
    motion_blur_px=0.6,
    exposure_jitter=0.15,
    exposure_drift=0.4,
    color_jitter=0.08,
    gamma_jitter=0.1,
    vignette=0.35,
)

PRESETS: dict[str, Preset] = {
    "easy": Preset(name="easy"),
    "occlusion": Preset(
        name="occlusion",
        n_objects=7,
        obj_size=(0.35, 0.75),
        obj_distance=(1.3, 3.0),
        obj_speed=(0.4, 0.9),
        n_static_boxes=14,
    ),
    "fast": Preset(
        name="fast",
        cam_speed=1.6,
        yaw_rate_amp=1.1,
        bob_amp=0.02,
        bob_freq=2.5,
        n_objects=4,
        obj_speed=(1.2, 2.2),
        obj_spin=(1.0, 2.5),
        obj_distance=(2.0, 5.0),
    ),
    "shift": Preset(
        name="shift",
        n_objects=4,
        textures=SHIFT_TEXTURES,
        nuisance=SHIFT_NUISANCE,
    ),
    # Real photographs as textures and a real camera's artefacts (JPEG on top of the `shift` nuisances): the
    # appearance closest to real video that the generator makes. Geometry and motion as `shift`.
    "photo": Preset(
        name="photo",
        n_objects=4,
        textures=PHOTO_TEXTURES,
        nuisance=replace(SHIFT_NUISANCE, jpeg_quality=(35, 90)),
    ),
    # Never in the training mixture (st4rtrack-train's default presets are the first four): the unseen deployment
    # domain of the domain-adaptation study (docs/domain_adaptation.md) — a tall, deep hall with shelving, a higher
    # and wider camera, two texture families and a fixed, strong set of sensor nuisances.
    "warehouse": Preset(
        name="warehouse",
        cam_speed=0.8,
        cam_height=1.1,
        cam_pitch_deg=3.0,
        hfov_deg=80.0,
        room_size=(24.0, 9.0, 5.0),
        n_static_boxes=18,
        n_objects=3,
        obj_size=(0.3, 0.7),
        obj_distance=(2.5, 6.0),
        textures=("brick", "stripes"),
        nuisance=NuisanceParams(
            noise_std=0.03,
            shot_noise=0.02,
            motion_blur_px=0.4,
            exposure_drift=0.3,
            color_jitter=0.05,
            gamma_jitter=0.1,
            vignette=0.5,
        ),
    ),
}


def get_preset(name: str, **overrides: object) -> Preset:
    """Return the named preset, optionally with fields replaced (e.g. ``cam_speed=1.0``)."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
    return replace(preset, **overrides) if overrides else preset
