"""Camera → model pixel mapping: exact against OpenCV's resize, for crop and pad, with intrinsics."""

from __future__ import annotations

import numpy as np
import pytest

from st4rtrack_ros.model.preprocess import plan_mapping, preprocess


def _ramp(w: int, h: int) -> np.ndarray:
    """An image whose channels encode the pixel's own (u, v), so resampling reveals the coordinate mapping."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack((u, v, np.zeros_like(u)), axis=-1)


@pytest.mark.parametrize(("cam", "mode"), [((640, 480), "crop"), ((640, 480), "pad"), ((1280, 720), "crop"),
                                           ((200, 300), "crop"), ((200, 300), "pad"), ((300, 90), "pad")])
def test_mapping_agrees_with_resampled_coordinates(cam, mode):
    import cv2

    mapping = plan_mapping(cam, (256, 160), mode)
    ramp = _ramp(*cam).astype(np.float32)
    resized = cv2.resize(ramp, mapping.resized_wh, interpolation=cv2.INTER_LINEAR)
    ox, oy = mapping.offset_xy
    # Pick model pixels that are inside the image content (not padding) and away from borders.
    mu, mv = np.meshgrid(np.arange(8, 248, 17), np.arange(8, 152, 13))
    uv_model = np.stack((mu.ravel(), mv.ravel()), axis=-1).astype(np.float64)
    ru, rv = uv_model[:, 0] + ox, uv_model[:, 1] + oy
    inside = (ru >= 1) & (rv >= 1) & (ru < mapping.resized_wh[0] - 1) & (rv < mapping.resized_wh[1] - 1)
    assert inside.sum() > 20
    sampled = resized[rv[inside].astype(int), ru[inside].astype(int), :2]
    predicted = mapping.model_to_camera(uv_model[inside])
    if mapping.scale_xy[0] >= 1:  # upsampling interpolates the ramp exactly
        np.testing.assert_allclose(sampled, predicted, atol=1e-3)
    else:  # downsampling with bilinear of a linear ramp is also exact away from the edges
        np.testing.assert_allclose(sampled, predicted, atol=1e-3)
    np.testing.assert_allclose(mapping.camera_to_model(predicted), uv_model[inside], atol=1e-9)


def test_intrinsics_follow_the_mapping():
    mapping = plan_mapping((640, 480), (256, 160), "crop")
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    Km = mapping.intrinsics_to_model(K)
    X = np.array([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0]])
    cam_px = (K @ X.T).T
    cam_px = cam_px[:, :2] / cam_px[:, 2:]
    model_px = (Km @ X.T).T
    model_px = model_px[:, :2] / model_px[:, 2:]
    np.testing.assert_allclose(mapping.camera_to_model(cam_px), model_px, atol=1e-9)


def test_preprocess_output_and_errors():
    rgb = np.full((480, 640, 3), 255, np.uint8)
    x, mapping = preprocess(rgb, (256, 160), "pad")
    assert x.shape == (3, 160, 256) and float(x.max()) == 1.0
    assert float(x.min()) < 0.01  # padding is mid-grey (0), the content white (1)
    assert mapping.resized_wh == (213, 160)
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess(np.zeros((10, 10), np.uint8), (256, 160))
    with pytest.raises(ValueError, match="fit mode"):
        plan_mapping((640, 480), (256, 160), "stretch")  # type: ignore[arg-type]
