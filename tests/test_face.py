"""Face stage on real photos (shared/media, read in place) and alignment geometry. No network."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer.face import Face, FaceDetector, align_face, alignment_matrix, draw_faces, read_image, similarity_from_points
from fer.face import model_file
from fer.face.align import TEMPLATE, box_matrix
from fer.face.detect import landmarks_from_eyes

SHARED = Path(os.environ.get("FER_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MEDIA = SHARED / "media"
YUNET = SHARED / "models" / model_file.YUNET_FILENAME

# Face counts from shared/media/README.md (YuNet, score 0.8, NMS 0.3).
EXPECTED_FACES = {
    "astronaut.png": 1, "camera.png": 1, "chelsea_cat_noface.png": 0, "coffee_noface.png": 0,
    "rocket_noface.jpg": 0, "obama-240p.jpg": 1, "obama-720p.jpg": 1, "obama-1080p.jpg": 1,
    "obama_partial_face.jpg": 1, "two_people.jpg": 2, "obama_and_biden.jpg": 3, "kit_with_rose.jpg": 2,
    "expression_angry_man.jpg": 1, "expression_crying_woman.jpg": 1,
}

pytestmark = pytest.mark.skipif(not YUNET.is_file(), reason=f"shared media/models not found under {SHARED}")


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    """Every test: the shipped YuNet file unless a test sets an override itself."""
    monkeypatch.delenv("FER_YUNET_MODEL", raising=False)


@pytest.fixture(scope="module")
def yunet():
    return FaceDetector("yunet")


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_face_counts_on_media(yunet, name):
    image = read_image(MEDIA / name)
    faces = yunet.detect(image)
    assert len(faces) == EXPECTED_FACES[name], f"{name}: {len(faces)} faces, expected {EXPECTED_FACES[name]}"
    areas = [f.box[2] * f.box[3] for f in faces]
    assert areas == sorted(areas, reverse=True), "faces must be sorted by area, largest first"
    h, w = image.shape[:2]
    for f in faces:
        x, y, bw, bh = f.box
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h, f"{name}: box {f.box} outside {w}x{h}"
        assert f.landmarks.shape == (5, 2) and f.landmarks.dtype == np.float32
        assert 0.8 <= f.score <= 1.0
        assert f.landmarks[0, 0] < f.landmarks[1, 0], "YuNet order: subject's right eye is on the image left"


def test_grey_photo_file_and_2d_array(yunet):
    image = read_image(MEDIA / "camera.png")
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    faces = yunet.detect(gray)
    assert len(faces) == 1 and iou(faces[0].box, yunet.detect(image)[0].box) > 0.9


def test_1080p_is_detected_downscaled_and_mapped_back(yunet):
    big = read_image(MEDIA / "obama-1080p.jpg")
    small = read_image(MEDIA / "obama-720p.jpg")
    (face_big,), (face_small,) = yunet.detect(big), yunet.detect(small)
    expected = np.array(face_small.box) * 1.5  # same photo, 1080 / 720
    assert np.abs(np.array(face_big.box) - expected).max() < 12, f"{face_big.box} vs {expected}"
    assert np.abs(face_big.landmarks - face_small.landmarks * 1.5).max() < 8
    full = FaceDetector("yunet", max_side=4000).detect(big)  # no downscale: same face
    assert len(full) == 1 and iou(full[0].box, face_big.box) > 0.7


def test_cut_off_face(yunet):
    image = read_image(MEDIA / "obama_partial_face.jpg")
    (face,) = yunet.detect(image)
    assert face.box[0] == 0, f"the face is cut off at the left edge, box {face.box}"
    crop = align_face(image, face)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8


@pytest.mark.parametrize("variant", ["bgra", "uint16", "gray", "gray_hw1", "float"])
def test_input_variants_of_a_real_photo(yunet, variant):
    image = read_image(MEDIA / "obama-720p.jpg")
    (reference,) = yunet.detect(image)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    converted = {
        "bgra": lambda: cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
        "uint16": lambda: image.astype(np.uint16) * 257,
        "gray": lambda: gray,
        "gray_hw1": lambda: gray[:, :, None],
        "float": lambda: image.astype(np.float32) / 255.0,
    }[variant]()
    faces = yunet.detect(converted)
    assert len(faces) == 1 and iou(faces[0].box, reference.box) > 0.85, f"{variant}: {faces}"
    assert align_face(converted, faces[0]).shape == (48, 48)


@pytest.mark.parametrize("shape", [(10, 10, 3), (19, 300, 3), (300, 19), (1, 1)])
def test_tiny_input_gives_no_faces(yunet, shape):
    assert yunet.detect(np.zeros(shape, np.uint8)) == []


def test_blank_frame_gives_no_faces(yunet):
    assert yunet.detect(np.full((480, 640, 3), 127, np.uint8)) == []


@pytest.mark.parametrize("bad, fragment", [
    ([[1, 2], [3, 4]], "numpy array"),
    (np.zeros(100, np.uint8), "(100,)"),
    (np.zeros((2, 30, 30, 3), np.uint8), "(2, 30, 30, 3)"),
    (np.zeros((30, 30, 2), np.uint8), "(30, 30, 2)"),
    (np.zeros((0, 30, 3), np.uint8), "empty"),
    (np.zeros((30, 30), np.int32), "int32"),
    (np.full((30, 30), 2.0, np.float32), "[0, 1]"),
])
def test_bad_input_raises_value_error_naming_it(yunet, bad, fragment):
    with pytest.raises(ValueError, match=None) as info:
        yunet.detect(bad)
    assert fragment in str(info.value), str(info.value)


def test_shipped_yunet_is_the_default_and_checked(monkeypatch):
    detector = FaceDetector()
    assert detector.backend == "yunet" and detector.model_path == model_file.VENDORED_YUNET
    assert model_file.sha256_of(detector.model_path) == model_file.YUNET_SHA256
    assert FaceDetector("auto").backend == "yunet", "'auto' is the old name of the default"
    assert YUNET.read_bytes() == model_file.VENDORED_YUNET.read_bytes(), "the shipped copy is the shared reference file"


def test_altered_shipped_yunet_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    damaged = tmp_path / model_file.YUNET_FILENAME
    damaged.write_bytes(YUNET.read_bytes()[:-1] + b"x")
    monkeypatch.setattr(model_file, "VENDORED_YUNET", damaged)
    with pytest.raises(ValueError, match="sha256") as info:
        FaceDetector()
    assert str(damaged) in str(info.value)
    monkeypatch.setattr(model_file, "VENDORED_YUNET", tmp_path / "gone.onnx")
    with pytest.raises(FileNotFoundError, match="gone.onnx"):
        FaceDetector("yunet")


def test_haar_only_when_asked_for():
    detector = FaceDetector("haar")
    assert detector.backend == "haar" and detector.model_path is None
    image = read_image(MEDIA / "obama-720p.jpg")
    (reference,) = FaceDetector().detect(image)
    faces = detector.detect(image)
    assert faces and iou(faces[0].box, reference.box) > 0.5, f"Haar {faces}, YuNet {reference.box}"
    assert faces[0].landmarks is None or faces[0].landmarks.shape == (5, 2)
    assert align_face(image, faces[0]).shape == (48, 48)


def test_env_var_and_path_override_the_shipped_file(monkeypatch, tmp_path):
    override = tmp_path / "my_yunet.onnx"
    override.write_bytes(YUNET.read_bytes())
    monkeypatch.setenv("FER_YUNET_MODEL", str(override))
    detector = FaceDetector()
    assert detector.model_path == override and len(detector.detect(read_image(MEDIA / "two_people.jpg"))) == 2
    assert FaceDetector(model_path=YUNET).model_path == YUNET, "an explicit path beats the environment variable"


def test_missing_explicit_or_env_model_file_is_an_error(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        FaceDetector(model_path=tmp_path / "nope.onnx")
    monkeypatch.setenv("FER_YUNET_MODEL", str(tmp_path / "gone.onnx"))
    with pytest.raises(FileNotFoundError, match="FER_YUNET_MODEL"):
        FaceDetector()


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        read_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    with pytest.raises(ValueError, match="notes.jpg"):
        read_image(text)


def test_read_image_converts_16bit_alpha_and_gray_files(tmp_path):
    image = read_image(MEDIA / "obama-240p.jpg")
    variants = {
        "u16.png": image.astype(np.uint16) * 257,
        "bgra.png": cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
        "gray.png": cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
        "gray16.tif": cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,
    }
    for name, data in variants.items():
        assert cv2.imwrite(str(tmp_path / name), data)
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == image.shape, f"{name}: {out.dtype} {out.shape}"
        assert np.abs(out.astype(int).mean() - image.astype(int).mean()) < 3, name


# ---- alignment geometry ----

def random_similarity(rng, angle_deg, scale):
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.c_[r, rng.uniform(-200, 400, size=2)]


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    for angle, scale in [(0, 1), (30, 2.5), (-75, 0.3), (179, 7)]:
        m = random_similarity(rng, angle, scale)
        src = rng.uniform(0, 500, size=(7, 2))
        dst = src @ m[:, :2].T + m[:, 2]
        assert np.allclose(similarity_from_points(src, dst), m, atol=1e-9), (angle, scale)
        assert np.allclose(similarity_from_points(src[:2], dst[:2]), m, atol=1e-9), "N=2 is exact"


def test_similarity_rejects_bad_points():
    with pytest.raises(ValueError, match="N >= 2"):
        similarity_from_points(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="same shape"):
        similarity_from_points(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="coincide"):
        similarity_from_points(np.ones((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="finite"):
        similarity_from_points(np.array([[0, 0], [np.nan, 1]]), np.zeros((2, 2)))


@pytest.mark.parametrize("angle, scale, size", [(0, 1, 48), (25, 3.0, 48), (-40, 0.5, 64), (90, 6.0, 112)])
def test_landmarks_land_on_template(angle, scale, size):
    rng = np.random.default_rng(1)
    m = random_similarity(rng, angle, scale)
    template_px = TEMPLATE.astype(np.float64) * size - 0.5
    landmarks = template_px @ m[:, :2].T + m[:, 2]  # a face seen under rotation, scale and translation
    a = alignment_matrix(landmarks, size)
    mapped = landmarks @ a[:, :2].T + a[:, 2]
    assert np.abs(mapped - template_px).max() < 0.5, f"landmarks land at {mapped}, template {template_px}"
    assert np.abs(mapped[:2] - template_px[:2]).max() < 0.5, "eyes must land on the template eyes"


def test_eyes_land_on_template_with_noisy_mouth():
    landmarks = TEMPLATE.astype(np.float64) * 100 + 50
    landmarks[3:, 1] += 4  # open mouth: corners lower than the template
    a = alignment_matrix(landmarks, 48, points=(0, 1))
    mapped = landmarks[:2] @ a[:, :2].T + a[:, 2]
    assert np.abs(mapped - (TEMPLATE[:2] * 48 - 0.5)).max() < 0.5


def test_align_face_warps_points_to_template():
    """Bright dots at rotated, scaled landmarks appear at the template points of the crop (warp + ROI + antialias)."""
    size = 48
    for angle, scale in [(20, 8.0), (-35, 1.5), (0, 0.9)]:
        m = random_similarity(np.random.default_rng(2), angle, scale)
        m[:, 2] = (300, 250)
        template_px = TEMPLATE.astype(np.float64) * size - 0.5
        landmarks = (template_px @ m[:, :2].T + m[:, 2]).astype(np.float32)
        for k in (0, 1):  # one eye at a time so the peak is unambiguous
            image = np.zeros((700, 800, 3), np.uint8)
            cv2.circle(image, tuple(int(round(v)) for v in landmarks[k]), max(1, int(scale * 1.5)), (255, 255, 255), -1)
            crop = align_face(image, Face(box=(0, 0, 10, 10), landmarks=landmarks, score=1.0), size)
            assert crop.shape == (size, size) and crop.dtype == np.uint8
            ys, xs = np.nonzero(crop >= crop.max() * 0.5)
            centre = np.array([xs.mean(), ys.mean()])
            assert np.abs(centre - template_px[k]).max() < 1.0, f"angle {angle} scale {scale}: {centre} vs {template_px[k]}"


def test_box_fallback_centres_the_box():
    box = (100, 80, 60, 60)
    m = box_matrix(box, 48)
    centre = m[:, :2] @ np.array([130.0, 110.0]) + m[:, 2]
    assert abs(centre[0] - 23.5) < 1e-9 and centre[1] < 23.5, "box centre maps to the crop centre (shifted up)"
    image = np.full((300, 300, 3), 90, np.uint8)
    crop = align_face(image, Face(box=box, landmarks=None, score=1.0), 48)
    assert crop.shape == (48, 48) and (crop == 90).all()


def test_haar_eye_landmarks_match_template():
    size = 48
    eyes = TEMPLATE[:2].astype(np.float64) * size
    landmarks = landmarks_from_eyes(eyes[1], eyes[0])  # either order
    assert np.allclose(landmarks[:2], eyes)
    assert np.abs(landmarks[2:] - TEMPLATE[2:] * size).max() < 0.05 * size, "nose/mouth estimate off the template"


def test_draw_faces():
    image = read_image(MEDIA / "two_people.jpg")
    before = image.copy()
    faces = [Face((10, 20, 100, 120), None, 1.0), (300, 40, 80, 80)]
    probs = np.array([[0.1, 0.9], [0.7, 0.3]])
    out = draw_faces(image, faces, ["happy", None], probs, ("sad", "happy"), track_ids=[3, None], show_bars=True)
    assert out.shape == image.shape and (image == before).all(), "draw_faces must not modify its input"
    assert (out != image).any()
    with pytest.raises(ValueError, match="labels"):
        draw_faces(image, faces, ["only one"])


@pytest.mark.parametrize("size", [40, 64, 112])
def test_colour_crop_of_a_real_photo_matches_the_gray_crop(yunet, size):
    image = read_image(MEDIA / "astronaut.png")
    face = yunet.detect(image)[0]
    gray = align_face(image, face, size)
    colour = align_face(image, face, size, channels=3)
    assert gray.shape == (size, size) and colour.shape == (size, size, 3) and colour.dtype == np.uint8
    # warp and BGR->gray are both linear, so converting after the warp differs from before only by rounding
    diff = np.abs(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(int) - gray.astype(int))
    assert diff.max() <= 2, diff.max()
    assert np.abs(colour[..., 0].astype(int) - colour[..., 2].astype(int)).mean() > 5, "the astronaut photo is colour"
    gray_photo = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    replicated = align_face(gray_photo, face, size, channels=3)
    assert all(np.array_equal(replicated[..., c], replicated[..., 0]) for c in (1, 2)), "gray photo: B = G = R"
    with pytest.raises(ValueError, match="channels must be 1 .* or 3"):
        align_face(image, face, size, channels=2)


def test_colour_crop_keeps_bgr_order_and_geometry():
    """A red dot at one eye lands on the template point in the R channel (index 2) of the BGR crop, not in B."""
    size = 64
    m = random_similarity(np.random.default_rng(3), 15, 4.0)
    m[:, 2] = (300, 250)
    template_px = TEMPLATE.astype(np.float64) * size - 0.5
    landmarks = (template_px @ m[:, :2].T + m[:, 2]).astype(np.float32)
    image = np.zeros((600, 700, 3), np.uint8)
    cv2.circle(image, tuple(int(round(v)) for v in landmarks[0]), 6, (0, 0, 255), -1)  # BGR red
    crop = align_face(image, Face(box=(0, 0, 10, 10), landmarks=landmarks, score=1.0), size, channels=3)
    assert crop[..., 0].max() == 0 and crop[..., 1].max() == 0 and crop[..., 2].max() > 200
    ys, xs = np.nonzero(crop[..., 2] >= crop[..., 2].max() * 0.5)
    assert np.abs(np.array([xs.mean(), ys.mean()]) - template_px[0]).max() < 1.0
