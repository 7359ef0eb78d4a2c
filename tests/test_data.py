import csv

import cv2
import numpy as np
import pytest
import torch

from fer.config import AugmentConfig, DataConfig
from fer.data import readers
from fer.data.loader import TrainBatches
from fer.data.paths import data_root, dataset_path
from fer.data.splits import load_eval_split, load_train_val
from fer.data.transforms import build_augmentation, to_tensor

# Official FER2013 counts (shared/data/README.md).
FER2013_COUNTS = {
    "train": dict(angry=3995, disgust=436, fear=4097, happy=7215, sad=4830, surprise=3171, neutral=4965),
    "public": dict(angry=467, disgust=56, fear=496, happy=895, sad=653, surprise=415, neutral=607),
    "private": dict(angry=491, disgust=55, fear=528, happy=879, sad=594, surprise=416, neutral=626),
}


@pytest.fixture(scope="module")
def fer_private(data_root):
    return readers.read_fer2013_folder(data_root / "fer2013", "private")


@pytest.mark.parametrize("split", ["train", "public", "private"])
def test_fer2013_split_counts_are_official(data_root, split):
    faces = readers.read_fer2013_folder(data_root / "fer2013", split)
    assert faces.class_counts() == FER2013_COUNTS[split]
    assert len(faces) == {"train": 28709, "public": 3589, "private": 3589}[split]
    assert faces.images.shape[1:] == (48, 48) and faces.images.dtype == np.uint8
    assert not faces.skipped


def write_fer2013_csv(path, faces, picked, extra_rows=()):
    """A fer2013.csv in the original format holding the picked real PrivateTest faces, then extra_rows as given."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for i in picked:
            writer.writerow([faces.labels[i], " ".join(map(str, faces.images[i].ravel())), "PrivateTest"])
        writer.writerows(extra_rows)


def test_fer2013_csv_round_trips_real_images(tmp_path, fer_private):
    picked = [i for label in range(7) for i in np.flatnonzero(fer_private.labels == label)[:3]]
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(path, fer_private, picked, [
        [3, " ".join(["7"] * 10), "PrivateTest"],  # not a square image
        [9, " ".join(["7"] * 2304), "PrivateTest"],  # unknown emotion code
        [0, " ".join(["7"] * 2304), "Training"],  # another split
    ])
    faces = readers.read_fer2013_csv(path, "private")
    assert np.array_equal(faces.images, fer_private.images[picked])
    assert np.array_equal(faces.labels, fer_private.labels[picked])
    assert [reason for _, reason in faces.skipped] == ["pixels: 10 values, not a square 8-bit image",
                                                        "emotion 9 outside 0..6"]
    assert faces.skipped[0][0].endswith("fer2013.csv:23")


def test_fer2013_csv_missing_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(ValueError, match="bad.csv: missing column"):
        readers.read_fer2013_csv(path, "train")


def test_ferplus_majority_counts_private(data_root):
    faces = readers.read_ferplus(data_root, "private")
    # Majority table of shared/data/README.md (PrivateTest column); unknown 27 + NF 1 excluded, 16 rows without image.
    assert faces.class_counts() == dict(neutral=1261, happy=928, surprise=444, sad=444, angry=325, disgust=23, fear=93,
                                        contempt=27)
    assert faces.excluded == {"no_image": 16, "unknown_or_not_a_face": 28}
    assert len(faces.class_names) == 8


def test_ferplus_majority_ties_go_to_first_column():
    votes = dict(neutral=4, happiness=4, surprise=0, sadness=0, anger=0, disgust=0, fear=0, contempt=0, unknown=2, NF=0)
    assert readers.ferplus_majority(votes) == "neutral"
    assert readers.ferplus_majority({**votes, "neutral": 0, "happiness": 0, "unknown": 5}) is None


def test_rafdb_train_counts(data_root):
    faces = readers.read_rafdb(data_root / "rafdb", "train")
    assert faces.class_counts() == dict(angry=705, disgust=717, fear=281, happy=4772, sad=1982, surprise=1290, neutral=2524)
    assert not faces.skipped


def test_rafdb_reports_missing_files_of_the_asked_split(data_root):
    faces = readers.read_rafdb(data_root / "rafdb", "test")  # the test images are held out
    assert len(faces) == 0 and len(faces.skipped) == 3068
    assert faces.skipped[0][0].endswith("test_0001_aligned.jpg")


def test_rafdb_validation_is_carved_stratified_and_seeded(data_root):
    cfg = DataConfig(dataset="rafdb", val_fraction=0.1)
    train, val = load_train_val(cfg, seed=0, root=data_root)
    assert len(train) + len(val) == 12271 and abs(len(val) - 1227) <= 1
    assert not set(train.paths) & set(val.paths)
    again = load_eval_split(cfg, "val", seed=0, root=data_root)
    assert again.paths == val.paths, "evaluation must recarve exactly the training run's validation split"
    share = {k: v / len(val) for k, v in val.class_counts().items()}
    assert abs(share["happy"] - 4772 / 12271) < 0.01


def make_folder_tree(root, fer_private, bad_files=True):
    for folder, label in (("anger", 0), ("happiness", 3), ("contempt", 6)):
        (root / folder).mkdir(parents=True)
        for i in np.flatnonzero(fer_private.labels == label)[:5]:
            cv2.imwrite(str(root / folder / f"{i}.png"), fer_private.images[i])
    if bad_files:
        (root / "anger" / "zero.jpg").write_bytes(b"")
        (root / "anger" / "text.png").write_text("not an image")
        good = (root / "happiness").glob("*.png").__next__().read_bytes()
        (root / "happiness" / "truncated.png").write_bytes(good[: len(good) // 3])


def test_class_folder_reports_bad_files_and_unknown_classes(tmp_path, fer_private):
    make_folder_tree(tmp_path, fer_private)
    with pytest.raises(ValueError, match="contempt"):
        readers.read_class_folder(tmp_path)
    faces = readers.read_class_folder(tmp_path, exclude_unknown=True)
    assert faces.class_counts()["angry"] == 5 and faces.class_counts()["happy"] == 5
    assert faces.excluded == {"contempt": 5}
    reasons = {p.rsplit("/", 1)[1]: r for p, r in faces.skipped}
    assert reasons == {"zero.jpg": "empty file", "text.png": "not a decodable image", "truncated.png": "not a decodable image"}


def test_class_folder_mapping(tmp_path, fer_private):
    make_folder_tree(tmp_path, fer_private, bad_files=False)
    faces = readers.read_class_folder(tmp_path, class_map={"contempt": "neutral"})
    assert faces.class_counts()["neutral"] == 5 and not faces.excluded


def test_dedup_clean_removes_test_images_leaked_from_train(data_root, fer_private):
    clean = load_eval_split(DataConfig(dataset="fer2013"), "private", root=data_root, dedup_clean=True)
    removed = clean.excluded["duplicate_of_train"]
    assert 0 < removed < 400 and len(clean) == 3589 - removed
    train_hashes = set(readers.pixel_hashes(readers.read_fer2013_folder(data_root / "fer2013", "train").images))
    assert not train_hashes & set(readers.pixel_hashes(clean.images))


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root("/elsewhere").as_posix() == "/elsewhere"
    assert dataset_path("rafdb") == tmp_path / "rafdb"
    monkeypatch.delenv("FER_DATA")
    assert data_root().name == "data"


def test_batches_are_deterministic_and_augmented(fer_private):
    faces = fer_private.subset(range(256))
    batches = TrainBatches(faces, 64, build_augmentation(AugmentConfig(), 48), seed=1)
    first = [x for x, _ in batches.epoch(0)]
    again = [x for x, _ in batches.epoch(0)]
    resumed = [x for x, _ in batches.epoch(0, start_batch=2)]
    assert len(first) == 4 and first[0].shape == (64, 1, 48, 48) and first[0].dtype.is_floating_point
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(np.array_equal(a, b) for a, b in zip(first[2:], resumed)), "mid-epoch resume must see the same batches"
    plain = to_tensor(faces.images[:64])
    assert not np.array_equal(first[0], plain)
    assert float(first[0].min()) >= -1 and float(first[0].max()) <= 1


def test_balanced_sampling_evens_out_classes(fer_private):
    batches = TrainBatches(fer_private, 64, None, seed=0, balanced=True)
    labels = np.concatenate([y.numpy() for _, y in batches.epoch(0)])
    counts = np.bincount(labels, minlength=7)
    assert counts.min() > 0.7 * counts.max(), counts


def test_to_tensor_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((2, 48, 48), np.float32))


# ------------------------------------------------------------------------------------------------ input size and colour

def test_fer2013_colour_is_gray_replicated_and_sized(data_root, fer_private):
    gray64 = readers.read_fer2013_folder(data_root / "fer2013", "private", 64)
    colour64 = readers.read_fer2013_folder(data_root / "fer2013", "private", 64, channels=3)
    assert gray64.images.shape == (3589, 64, 64) and colour64.images.shape == (3589, 64, 64, 3)
    assert colour64.images.dtype == np.uint8 and colour64.labels.tolist() == fer_private.labels.tolist()
    for c in range(3):
        assert np.array_equal(colour64.images[..., c], gray64.images), f"FER2013 is gray at source: channel {c} = gray"
    assert not np.array_equal(gray64.images[:, ::4, ::4][:, :12, :12], fer_private.images[:, ::4, ::4][:, :12, :12])
    with pytest.raises(ValueError, match="channels must be 1 .* or 3"):
        readers.read_fer2013_folder(data_root / "fer2013", "private", 48, channels=4)


def test_fer2013_csv_colour_and_size(tmp_path, fer_private):
    picked = list(range(0, 70, 10))
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(path, fer_private, picked)
    colour = readers.read_fer2013_csv(path, "private", 100, channels=3)
    expected = np.stack([cv2.resize(fer_private.images[i], (100, 100), interpolation=cv2.INTER_LINEAR) for i in picked])
    assert colour.images.shape == (7, 100, 100, 3)
    assert all(np.array_equal(colour.images[..., c], expected) for c in range(3))


def test_rafdb_colour_is_bgr_as_on_disk_and_shrinks_with_inter_area(data_root):
    full = readers.read_rafdb(data_root / "rafdb", "train", 100, channels=3)
    assert full.images.shape == (12271, 100, 100, 3) and not full.skipped
    for i in (0, 777, 12270):
        assert np.array_equal(full.images[i], cv2.imread(full.paths[i])), "100 px colour is the file itself, BGR"
    assert any(not np.array_equal(full.images[i, ..., 0], full.images[i, ..., 2]) for i in range(10)), "RAF-DB is colour"
    small = readers.read_rafdb(data_root / "rafdb", "train", 64, channels=3)
    assert small.images.shape == (12271, 64, 64, 3)
    assert np.array_equal(small.images[5], cv2.resize(full.images[5], (64, 64), interpolation=cv2.INTER_AREA))
    gray = readers.read_rafdb(data_root / "rafdb", "train", 48)
    assert gray.images.shape == (12271, 48, 48)
    assert np.array_equal(gray.images[5], cv2.resize(cv2.imread(full.paths[5], cv2.IMREAD_GRAYSCALE), (48, 48),
                                                     interpolation=cv2.INTER_AREA))


def test_every_dataset_reads_at_the_configured_size_and_channels(data_root, tmp_path, fer_private):
    make_folder_tree(tmp_path / "tree", fer_private, bad_files=False)
    for dataset, path in (("fer2013", None), ("ferplus", None), ("rafdb", None), ("folder", str(tmp_path / "tree"))):
        cfg = DataConfig(dataset=dataset, path=path, image_size=56, channels=3, max_per_class=4,
                         class_map={"happiness": "happy", "anger": "angry"} if path else {}, exclude_unknown=bool(path),
                         val_fraction=0.5 if path else 0.1)  # the folder tree holds 10 photos
        train, val = load_train_val(cfg, seed=0, root=data_root)
        for faces in (train, val):
            assert faces.images.shape[1:] == (56, 56, 3) and faces.images.dtype == np.uint8, (dataset, faces.images.shape)
            assert len(faces) == len(faces.paths) > 0, dataset


def test_colour_batches_augment_and_convert_in_bgr_order(data_root):
    faces = readers.read_rafdb(data_root / "rafdb", "train", 64, channels=3).subset(range(128))
    x = to_tensor(faces.images[:4])
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
    for c in range(3):  # channel c of the tensor is channel c (B, G, R) of the face, scaled x / 255 * 2 - 1
        assert torch.allclose(x[:, c], torch.from_numpy(faces.images[:4, ..., c]).float() / 255 * 2 - 1, atol=1e-6)
    gray = to_tensor(faces.images[:4, ..., 0])
    assert gray.shape == (4, 1, 64, 64) and torch.equal(gray[:, 0], x[:, 0])
    cfg = AugmentConfig(brightness_contrast=1.0, erase=1.0)
    batches = TrainBatches(faces, 32, build_augmentation(cfg, 64), seed=1)
    first = [x for x, _ in batches.epoch(0)]
    assert len(first) == 4 and first[0].shape == (32, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in batches.epoch(0)])), "seeded like gray batches"
    assert not torch.equal(first[0], to_tensor(faces.images[:32]))
    with pytest.raises(ValueError, match=r"\(B, S, S, 3\) BGR"):
        to_tensor(np.zeros((2, 48, 48, 4), np.uint8))
