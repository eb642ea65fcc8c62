"""Real photographs as textures and a real camera's artefacts (JPEG, lens distortion) in the synthetic data."""

from __future__ import annotations

import dataclasses
import re

import cv2
import numpy as np
import pytest

from st4rtrack_ros.data.nuisance import jpeg_round_trip, radial_distortion_maps
from st4rtrack_ros.data.photos import PHOTOS, load_photo, photo_dir, sample_photo
from st4rtrack_ros.data.scene import intrinsics_from_fov
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.training.data import DataConfig, render_group


def test_every_photo_has_a_free_licence_and_loads():
    """Each photograph's licence is recorded as scikit-image states it (checked against its docstring on disk)."""
    fetchers = (photo_dir() / "_fetchers.py").read_text()
    for name, licence in PHOTOS.items():
        assert re.search(r"CC0|public domain|no known copyright", licence, re.IGNORECASE), name
        image = load_photo(name)
        assert image.dtype == np.float32 and image.shape[2] in (1, 3) and max(image.shape[:2]) <= 384
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.02, name
        stem = name.split(".")[0].replace("_motion", "")  # clock_motion.png is `clock()` there
        doc = fetchers[fetchers.index(f"def {stem}("):]
        doc = doc[:doc.index('"""', doc.index('"""') + 3)]
        assert re.search(r"CC0|public domain|No known copyright", doc), name


def test_sampling_is_bilinear_and_mirrors_without_seams():
    image = load_photo("chelsea.png")
    h, w = image.shape[:2]
    per = max(h, w) / 2.0  # pixels per texture period (PERIODS_PER_PHOTO = 2)
    x, y = np.array([5.0, 100.0]), np.array([7.0, 40.0])
    np.testing.assert_allclose(sample_photo("chelsea.png", x / per, -y / per), image[y.astype(int), x.astype(int)],
                               atol=1e-6)
    half = sample_photo("chelsea.png", np.array([5.5 / per]), np.array([-7.0 / per]))
    np.testing.assert_allclose(half[0], 0.5 * (image[7, 5] + image[7, 6]), atol=1e-6)
    # across the repeat at column w the photograph continues mirrored: column w shows column w - 1
    np.testing.assert_allclose(sample_photo("chelsea.png", np.array([w / per]), np.array([-7.0 / per]))[0],
                               image[7, w - 1], atol=1e-6)


def test_photo_preset_renders_photographs_and_jpeg():
    frames = list(make_sequence("photo", 3, 1000, 128, 80, n_tracks=10).frames())
    again = list(make_sequence("photo", 3, 1000, 128, 80, n_tracks=10).frames())
    for a, b in zip(frames, again, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)  # deterministic, JPEG quality included
    assert frames[0].rgb.dtype == np.uint8 and frames[0].rgb.std() > 10
    clean = (np.random.default_rng(0).random((80, 128, 3)) * 255).astype(np.uint8)
    smooth = cv2.GaussianBlur(clean, (9, 9), 3)
    lossy = jpeg_round_trip(smooth, 40)
    err = np.abs(lossy.astype(int) - smooth).mean()
    assert 0 < err < 6  # changed, as JPEG does, but still the same picture


def test_lens_distortion_keeps_corners_and_labels_exact():
    k = intrinsics_from_fov(128, 80, 70.0)
    mx, my = radial_distortion_maps(k, 128, 80, 0.15)
    assert abs(mx[0, 0]) < 1e-3 and abs(my[79, 127] - 79) < 1e-3  # corners stay
    assert mx.min() >= -1e-3 and mx.max() <= 127 + 1e-3 and my.min() >= -1e-3 and my.max() <= 79 + 1e-3
    assert abs(mx[40, 100] - 100) > 1.0  # the inside moves
    with pytest.raises(ValueError, match="folds"):
        radial_distortion_maps(k, 128, 80, -0.9)

    cfg = DataConfig(width=64, height=48, seq_len=8, max_gap=4, pairs_per_seq=2, presets=("easy",))
    plain = render_group(cfg, "train", 5)
    warped = render_group(dataclasses.replace(cfg, lens_k1=0.2), "train", 5)
    assert not np.array_equal(plain["rgb2"], warped["rgb2"])
    # every warped label is the label of one source pixel (nearest sampling): exact 3D points, not blends
    source = {tuple(p) for p in plain["track_pts"][0].reshape(-1, 3)}
    assert all(tuple(p) in source for p in warped["track_pts"][0].reshape(-1, 3))
    np.testing.assert_array_equal(plain["is_self"], warped["is_self"])
    # rendering a group twice gives the same pixels (the disk cache and exact resume rely on it)
    np.testing.assert_array_equal(render_group(cfg, "train", 5)["rgb2"], plain["rgb2"])


def test_photo_dir_override_and_a_clear_error_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("ST4R_PHOTO_DIR", str(tmp_path))
    assert photo_dir() == tmp_path
    load_photo.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="scikit-image"):
            load_photo("coffee.png")
    finally:
        load_photo.cache_clear()
