"""Intrinsics: focal from a pointmap matches the official estimate; CameraInfo K maps to model pixels exactly."""

from pathlib import Path

import numpy as np
import pytest
import torch

from st4rtrack_ros.geometry.intrinsics import (
    focal_from_pointmap,
    intrinsics_from_focal,
    intrinsics_from_pointmap,
)
from st4rtrack_ros.geometry.projection import project, unproject_depth
from st4rtrack_ros.model.preprocess import plan_mapping

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "focal_cases.npz"


@pytest.fixture(scope="module")
def focal_cases():
    if not GOLDEN.is_file():
        pytest.fail(f"golden focal cases missing: expected {GOLDEN} (shared/ must sit beside the repository)")
    return np.load(GOLDEN)


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("method", ["weiszfeld", "median"])
def test_focal_matches_official(focal_cases, case, method):
    pts = torch.from_numpy(focal_cases[f"case{case}_pts3d"])
    want = float(focal_cases[f"case{case}_focal_{method}"])
    got = focal_from_pointmap(pts, method=method).item()
    assert abs(got - want) / want < 1e-3, (method, case, got, want)
    # and it is close to the camera that made the data
    assert abs(got - float(focal_cases[f"case{case}_true_focal"])) / want < 0.02


def test_focal_ignores_points_behind_camera_and_nan():
    k = intrinsics_from_focal(torch.tensor(100.0), 48, 64)
    depth = 2.0 + torch.rand(1, 48, 64)
    pts = unproject_depth(depth, k)
    pts[0, :10] = -pts[0, :10]  # behind the camera
    pts[0, 10:12] = float("nan")
    for method in ("weiszfeld", "median"):
        f = focal_from_pointmap(pts, method=method).item()
        assert abs(f - 100.0) < 1e-2, (method, f)
    k2 = intrinsics_from_pointmap(pts[0])
    assert torch.allclose(k2, k, atol=1e-2)


def test_camera_info_k_maps_points_to_model_pixels():
    """CameraInfo K → model K through the preprocessing's pixel mapping (one code path for images and K)."""
    mapping = plan_mapping((1280, 720), (512, 288), "crop")
    fx, fy, cx, cy = 910.0, 905.0, 641.3, 362.7
    k_cam = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]], dtype=torch.float64)
    k_model = torch.as_tensor(mapping.intrinsics_to_model(k_cam.numpy()))
    pts = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.4, 5.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    uv_cam, _ = project(pts, k_cam)
    uv_model, _ = project(pts, k_model)
    assert torch.allclose(torch.as_tensor(mapping.camera_to_model(uv_cam.numpy())), uv_model, atol=1e-9)
    # 1280×720 → 512×288 is a pure 2.5× resize: model pixel 0 is camera pixel 0.75 (integer pixel centres)
    assert mapping.model_to_camera(np.zeros(2)) == pytest.approx([0.75, 0.75])


def test_camera_info_centre_crop():
    mapping = plan_mapping((640, 480), (512, 288), "crop")  # 4:3 → 16:9: resize ×0.8 to 512×384, crop 48 rows
    k = mapping.intrinsics_to_model(np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]]))
    assert k[0, 0] == pytest.approx(480.0) and k[1, 1] == pytest.approx(480.0)
    assert k[0, 2] == pytest.approx((320.0 + 0.5) * 0.8 - 0.5)
    assert k[1, 2] == pytest.approx((240.0 + 0.5) * 0.8 - 0.5 - 48)
