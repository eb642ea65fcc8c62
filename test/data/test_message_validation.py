"""Bad camera input is refused with a cause, never with a crash: image decoding (encodings, step, truncation, sizes,
corrupt compressed data), depth (NaN/Inf, units, all invalid), CameraInfo, stamps. Example cases name each fault;
the hypothesis properties throw random sizes, encodings, steps and bytes at the decoders."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from st4rtrack_ros.data import messages as m
from st4rtrack_ros.tracking.types import MIN_SIDE, BadInput

#: Fast and reproducible on a 2-core CI machine (no example database, fixed seed).
FAST = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

#: encoding → (bytes per pixel, decodes to RGB when the layout is right)
ENCODINGS: dict[str, tuple[int, bool]] = {
    "rgb8": (3, True), "bgr8": (3, True), "rgba8": (4, True), "bgra8": (4, True), "mono8": (1, True),
    "mono16": (2, True), "rgb16": (6, True), "bgra16": (8, True), "8UC1": (1, True), "8UC3": (3, True),
    "16UC1": (2, True), "bayer_rggb8": (1, True), "bayer_gbrg16": (2, True), "yuv422": (2, True),
    "yuyv": (2, True), "32FC1": (4, False), "64FC3": (24, False), "8UC2": (2, False), "8UC4": (4, False),
    "nv12": (1, False), "no_such_encoding": (3, False), "": (3, False), "RGB8": (3, False),
}


def image(enc: str, w: int, h: int, data: bytes, step: int | None = None, bigendian: int = 0) -> SimpleNamespace:
    """A duck-typed sensor_msgs/Image (the decoders only read attributes)."""
    bpp = ENCODINGS.get(enc, (3, False))[0]
    return SimpleNamespace(encoding=enc, width=w, height=h, step=w * bpp if step is None else step,
                           is_bigendian=bigendian, data=data)


def cause(fn, *args, **kw) -> str:
    with pytest.raises(BadInput) as e:
        fn(*args, **kw)
    return e.value.cause


RGB = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


# -- examples: one per fault -------------------------------------------------------------------------------------


def test_good_rgb8_bgr8_mono_and_padded_step_decode_exactly() -> None:
    assert np.array_equal(m.image_to_rgb(image("rgb8", 32, 24, RGB.tobytes())), RGB)
    assert np.array_equal(m.image_to_rgb(image("bgr8", 32, 24, RGB[..., ::-1].tobytes())), RGB)
    padded = np.zeros((24, 32 * 3 + 5), np.uint8)
    padded[:, :96] = RGB.reshape(24, 96)
    assert np.array_equal(m.image_to_rgb(image("rgb8", 32, 24, padded.tobytes(), step=101)), RGB)
    gray = RGB[..., 0]
    assert np.array_equal(m.image_to_rgb(image("mono8", 32, 24, gray.tobytes()))[..., 2], gray)
    big = (gray.astype(np.uint16) << 8).astype(">u2").tobytes()  # big-endian mono16 → the high byte
    assert np.array_equal(m.image_to_rgb(image("mono16", 32, 24, big, bigendian=1))[..., 1], gray)


@pytest.mark.parametrize(("msg", "expected"), [
    (image("no_such_encoding", 32, 24, RGB.tobytes()), "unsupported_encoding"),
    (image("32FC1", 32, 24, bytes(32 * 24 * 4)), "unsupported_encoding"),  # depth on the colour topic
    (image("nv12", 32, 24, bytes(32 * 36)), "unsupported_encoding"),
    (image("rgb8", 32, 24, RGB.tobytes(), step=64), "step_mismatch"),  # step < width*3
    (image("rgb8", 32, 24, RGB.tobytes()[:1000]), "truncated"),
    (image("rgb8", 32, 24, b""), "empty"),
    (image("rgb8", 0, 24, b""), "empty"),
    (image("rgb8", 32, 24, RGB.tobytes() + b"\0" * 7), "data_size_mismatch"),
    (image("mono8", 32, 24, RGB.tobytes()), "data_size_mismatch"),  # rgb8 data labelled mono8
    (image("rgb8", 8, 8, bytes(8 * 8 * 3)), "too_small"),
    (image("yuv422", 31, 24, bytes(31 * 24 * 2)), "odd_width"),
    (image("rgb8", 100_000, 100_000, b""), "too_large"),  # refused before the (absent) buffer is read
])
def test_each_image_fault_has_its_cause(msg: SimpleNamespace, expected: str) -> None:
    assert cause(m.image_to_rgb, msg, 10_000_000, MIN_SIDE) == expected


def test_max_pixels_limit_is_configurable_and_zero_disables_it() -> None:
    msg = image("rgb8", 32, 24, RGB.tobytes())
    assert cause(m.image_to_rgb, msg, 32 * 24 - 1) == "too_large"
    assert m.image_to_rgb(msg, 32 * 24).shape == (24, 32, 3)
    assert m.image_to_rgb(msg, 0).shape == (24, 32, 3)


def _compressed(data: bytes, fmt: str = "jpeg") -> SimpleNamespace:
    return SimpleNamespace(format=fmt, data=data)


def test_compressed_good_corrupt_empty_and_too_large() -> None:
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    assert ok and np.array_equal(m.image_to_rgb(_compressed(png.tobytes(), "png")), RGB)
    assert cause(m.image_to_rgb, _compressed(b"\xff\xd8\xff garbage" * 10)) == "corrupt_compressed"
    assert cause(m.image_to_rgb, _compressed(png.tobytes()[:40], "png")) == "corrupt_compressed"  # header only
    assert cause(m.image_to_rgb, _compressed(b"")) == "empty"
    assert cause(m.image_to_rgb, _compressed(png.tobytes(), "png"), 100) == "too_large"
    assert cause(m.image_to_rgb, _compressed(png.tobytes(), "16UC1; compressedDepth")) == "unsupported_encoding"


def _depth(values: np.ndarray, enc: str = "32FC1") -> SimpleNamespace:
    arr = np.ascontiguousarray(values, dtype="<f4" if enc == "32FC1" else "<u2")
    return SimpleNamespace(encoding=enc, width=arr.shape[1], height=arr.shape[0], step=arr.shape[1] * arr.itemsize,
                           is_bigendian=0, data=arr.tobytes())


def test_depth_nan_inf_become_holes_and_units_are_checked() -> None:
    d = np.full((20, 30), 2.0, np.float32)
    d[0, :5] = [np.nan, np.inf, -np.inf, -1.0, 0.0]
    out = m.depth_from_msg(_depth(d))
    assert np.isfinite(out).all() and (out[0, :5] == 0).all() and out[1, 1] == 2.0
    m.check_depth(out, "32FC1")  # plausible metres
    mm = m.depth_from_msg(_depth(np.full((20, 30), 1500, np.uint16), "16UC1"))
    assert mm[0, 0] == pytest.approx(1.5)  # 16UC1 is millimetres
    m.check_depth(mm, "16UC1")
    as_mm = m.depth_from_msg(_depth(np.full((20, 30), 1500.0), "32FC1"))  # millimetres sent as 32FC1
    with pytest.raises(BadInput, match="looks like millimetres") as e:
        m.check_depth(as_mm, "32FC1")
    assert e.value.cause == "units"
    as_m = m.depth_from_msg(_depth(np.full((20, 30), 2, np.uint16), "16UC1"))  # metres sent as 16UC1
    with pytest.raises(BadInput, match="looks like metres"):
        m.check_depth(as_m, "16UC1")
    holes = m.depth_from_msg(_depth(np.full((20, 30), np.nan)))
    assert cause(m.check_depth, holes, "32FC1") == "all_invalid"
    assert cause(m.depth_from_msg, _depth(d).__class__(**{**vars(_depth(d)), "encoding": "rgb8"})) == \
        "unsupported_encoding"


def _info(k: list[float], w: int = 640, h: int = 480) -> SimpleNamespace:
    return SimpleNamespace(k=k, width=w, height=h)


def test_camera_info_zeros_nan_and_size_are_refused() -> None:
    good = [500.0, 0, 320, 0, 500, 240, 0, 0, 1]
    k, w, h = m.intrinsics_from_msg(_info(good))
    assert k[0, 0] == 500 and (w, h) == (640, 480)
    with pytest.raises(BadInput, match="focal"):
        m.intrinsics_from_msg(_info([0.0] * 9))
    with pytest.raises(BadInput, match="NaN"):
        m.intrinsics_from_msg(_info([500.0, 0, float("nan"), 0, 500, 240, 0, 0, 1]))
    with pytest.raises(BadInput, match="size"):
        m.intrinsics_from_msg(_info(good, 0, 0))
    assert cause(m.intrinsics_from_msg, _info([0.0] * 9)) == "invalid"


def test_future_stamps_are_refused_unless_disabled_or_no_clock_yet() -> None:
    now = 1_700_000_000 * 10**9
    m.check_stamp(now + 10 * 10**9, now, 60.0)
    assert cause(m.check_stamp, now + 2 * 86400 * 10**9, now, 86400.0) == "future_stamp"
    m.check_stamp(now + 2 * 86400 * 10**9, now, 0.0)  # 0 = off
    m.check_stamp(now, 0, 86400.0)  # use_sim_time before the first /clock: nothing to compare with


# -- properties --------------------------------------------------------------------------------------------------


@st.composite
def raw_images(draw: st.DrawFn) -> tuple[SimpleNamespace, bool, int]:
    """A random Image: encoding, size (incl. 0), step (padded or too short), data length (short, long, none), byte
    order and random bytes. Returns it, whether its layout is consistent, and the pixel limit used."""
    enc = draw(st.sampled_from(sorted(ENCODINGS)))
    bpp = ENCODINGS[enc][0]
    fault = draw(st.sampled_from(["none", "none", "none", "zero", "step", "short", "long", "empty"]))
    sides = st.integers(0, 40) if fault == "zero" else st.one_of(st.integers(MIN_SIDE, 40), st.integers(1, 40))
    w, h = draw(sides), draw(sides)
    step = w * bpp + (-draw(st.integers(1, max(1, w * bpp))) if fault == "step" else draw(st.sampled_from([0, 3])))
    step = max(step, 0)
    size = {"short": draw(st.integers(0, max(step * h - 1, 0))), "long": step * h + draw(st.integers(1, 64)),
            "empty": 0}.get(fault, step * h)
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, size, np.uint8).tobytes()
    limit = draw(st.sampled_from([0, 0, 400, 10_000]))
    consistent = step >= w * bpp and len(data) == step * h and w > 0 and h > 0
    consistent &= not (enc in ("yuv422", "yuyv") and w % 2)  # 4:2:2 packs pixel pairs
    return image(enc, w, h, data, step=step, bigendian=draw(st.integers(0, 1))), consistent, limit


@settings(FAST, max_examples=250)  # ~1 ms each; enough to decode every supported encoding
@given(raw_images())
def test_image_decoding_gives_rgb_or_bad_input(case: tuple[SimpleNamespace, bool, int]) -> None:
    msg, consistent, limit = case
    try:
        rgb = m.image_to_rgb(msg, limit, MIN_SIDE)
    except BadInput as e:
        event(e.cause)
        assert e.cause and str(e)
        supported = ENCODINGS[msg.encoding][1]
        fits = limit == 0 or msg.width * msg.height <= limit
        if consistent and supported and fits and min(msg.width, msg.height) >= MIN_SIDE:
            pytest.fail(f"a well-formed {msg.encoding} {msg.width}×{msg.height} image was refused: {e}")
        return
    event("decoded")
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3) and rgb.flags.c_contiguous
    assert consistent and min(rgb.shape[:2]) >= MIN_SIDE
    if msg.encoding == "rgb8":  # exact: the row padding is skipped
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
        assert np.array_equal(rgb.reshape(msg.height, -1), rows)


@st.composite
def compressed_images(draw: st.DrawFn) -> SimpleNamespace:
    """A real PNG/JPEG of random size, cut short or with bytes overwritten, or plain random bytes."""
    fmt = draw(st.sampled_from(["png", "jpeg"]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    pixels = np.frombuffer(draw(st.binary(min_size=w * h * 3, max_size=w * h * 3)), np.uint8).reshape(h, w, 3)
    data = bytearray(cv2.imencode(".png" if fmt == "png" else ".jpg", pixels)[1].tobytes())
    how = draw(st.sampled_from(["intact", "cut", "flip", "random"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=512)))
    return SimpleNamespace(format=fmt, data=bytes(data))


@FAST
@given(compressed_images(), st.sampled_from([0, 1000]))
def test_compressed_decoding_gives_rgb_or_bad_input(msg: SimpleNamespace, limit: int) -> None:
    try:
        rgb = m.image_to_rgb(msg, limit, MIN_SIDE)
    except BadInput as e:
        event(e.cause)
        assert e.cause in {"corrupt_compressed", "empty", "too_small", "too_large"}, e.cause
        return
    event("decoded")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= MIN_SIDE
    assert limit == 0 or rgb.shape[0] * rgb.shape[1] <= limit


_DEPTH_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.sampled_from([0.0, 0.5, 2.0, 1500.0, float("nan"), float("inf")]))


@FAST
@given(st.integers(1, 24), st.integers(1, 24), st.data(), st.sampled_from(["32FC1", "16UC1"]))
def test_depth_decoding_never_passes_nan_and_checks_plausibility(w: int, h: int, data: st.DataObject,
                                                                 enc: str) -> None:
    if enc == "32FC1":
        values = np.array(data.draw(st.lists(_DEPTH_VALUES, min_size=w * h, max_size=w * h)), np.float32)
    else:
        values = np.array(data.draw(st.lists(st.integers(0, 65535), min_size=w * h, max_size=w * h)), np.uint16)
    depth = m.depth_from_msg(_depth(values.reshape(h, w), enc))
    assert depth.shape == (h, w) and depth.dtype == np.float32 and np.isfinite(depth).all() and (depth >= 0).all()
    try:
        m.check_depth(depth, enc)
    except BadInput as e:
        event(e.cause)
        assert e.cause in {"all_invalid", "units"}
        return
    event("plausible")
    valid = depth[depth > 0]
    assert valid.size and m.DEPTH_MEDIAN_RANGE_M[0] <= np.median(valid[:: max(1, valid.size // 4096)]) <= \
        m.DEPTH_MEDIAN_RANGE_M[1]
