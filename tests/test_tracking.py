"""IouTracker and ProbabilitySmoother on hand-made boxes: no video, no detector."""

import numpy as np
import pytest

from fer.tracking import IouTracker, ProbabilitySmoother, classification_due, iou_matrix


def test_iou_matrix_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    iou = iou_matrix(a, b)
    assert iou.shape == (1, 3), iou.shape
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    assert iou_matrix(np.empty((0, 4)), b).shape == (0, 3)


def test_ids_stable_under_small_motion():
    tracker = IouTracker()
    boxes = np.array([[100.0, 100, 80, 80], [300, 120, 60, 60]])
    first = [t.track_id for t in tracker.update(boxes)]
    assert first == [1, 2], first
    for step in range(1, 30):
        shifted = boxes + [3 * step, -2 * step, step % 2, 0]
        ids = [t.track_id for t in tracker.update(shifted[::-1])]  # detector order must not matter
        assert ids == [2, 1], f"step {step}: ids {ids}"
    assert tracker.next_id == 3, "no new track should have been opened"


def test_new_face_gets_new_id_and_old_one_expires():
    tracker = IouTracker(max_missed=3)
    face_a = np.array([[50.0, 50, 60, 60]])
    face_b = np.array([[400.0, 60, 60, 60]])
    (a,) = tracker.update(face_a)
    ids = [t.track_id for t in tracker.update(np.concatenate([face_a, face_b]))]
    assert ids == [a.track_id, a.track_id + 1], ids
    for missed in range(1, 4):  # face A gone for max_missed frames: still remembered
        tracker.update(face_b)
        assert a.track_id in tracker.track_ids, f"dropped after {missed} missed frames"
    tracker.update(face_b)
    assert a.track_id not in tracker.track_ids, "not dropped after max_missed + 1 frames"
    (back,) = tracker.update(face_a)
    assert back.track_id == a.track_id + 2, "a face returning after expiry gets a fresh id"


def test_face_returning_within_max_missed_keeps_its_id():
    tracker = IouTracker(max_missed=5)
    (first,) = tracker.update([[10, 10, 50, 50]])
    assert tracker.update(np.empty((0, 4))) == []
    assert tracker.predict() == [], "an unmatched track is not visible"
    (again,) = tracker.update([[12, 11, 50, 50]])
    assert again.track_id == first.track_id


def test_predict_velocity_and_hold():
    for motion, expected_x in (("velocity", 130.0), ("hold", 110.0)):
        tracker = IouTracker(motion=motion)
        tracker.update([[100, 50, 40, 40]])
        tracker.update([[110, 50, 40, 40]], [np.array([[120, 60]] * 5, dtype=np.float32)])
        tracker.predict()
        (track,) = tracker.predict()
        assert track.box[0] == pytest.approx(expected_x), (motion, track.box)
        # landmarks move with the box
        assert track.landmarks[0, 0] == pytest.approx(120 + expected_x - 110), (motion, track.landmarks)


def test_velocity_is_per_frame_when_detecting_every_kth_frame():
    tracker = IouTracker()
    tracker.update([[100, 50, 40, 40]])
    tracker.predict()
    tracker.predict()
    (track,) = tracker.update([[115, 50, 40, 40]])
    np.testing.assert_allclose(track.velocity, [5, 0, 0, 0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="motion"):
        IouTracker(motion="kalman")
    with pytest.raises(ValueError, match="iou_threshold"):
        IouTracker(iou_threshold=0)
    with pytest.raises(ValueError, match="landmark"):
        IouTracker().update([[0, 0, 5, 5]], [None, None])


def test_ema_math():
    smoother = ProbabilitySmoother(alpha=0.25)
    p0, p1, p2 = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(smoother.update(7, p0), p0)
    s1 = smoother.update(7, p1)
    np.testing.assert_allclose(s1, 0.25 * p1 + 0.75 * p0)
    np.testing.assert_allclose(smoother.update(7, p2), 0.25 * p2 + 0.75 * s1)
    np.testing.assert_allclose(smoother.update(8, p1), p1, err_msg="tracks are smoothed separately")


def test_window_mean_and_none():
    smoother = ProbabilitySmoother.from_spec("mean:3")
    rows = np.eye(4)[:, :3]  # one-hot vectors of 3 classes, the last row is zero
    out = [smoother.update(1, row) for row in rows]
    np.testing.assert_allclose(out[1], rows[:2].mean(0))
    np.testing.assert_allclose(out[3], rows[1:4].mean(0))
    none = ProbabilitySmoother.from_spec("none")
    none.update(1, rows[0])
    np.testing.assert_allclose(none.update(1, rows[1]), rows[1])


def test_prune_forgets_dead_tracks():
    smoother = ProbabilitySmoother.from_spec("ema:0.5")
    smoother.update(1, np.array([1.0, 0.0]))
    smoother.update(2, np.array([1.0, 0.0]))
    smoother.prune({2})
    np.testing.assert_allclose(smoother.update(1, np.array([0.0, 1.0])), [0.0, 1.0])


def test_classification_due_staggers_tracks_and_never_skips_a_new_one():
    smoother = ProbabilitySmoother.from_spec("ema:0.5")
    assert classification_due([3, 4], 0, 2, smoother).all(), "new tracks: nothing to hold yet"
    for track_id in (3, 4):
        smoother.update(track_id, np.array([1.0, 0.0]))
    # Known tracks take turns: one of the two faces per frame, not both on even frames and none on odd ones.
    assert classification_due([3, 4], 1, 2, smoother).tolist() == [True, False]
    assert classification_due([3, 4], 2, 2, smoother).tolist() == [False, True]
    assert classification_due([3, 4, 5], 2, 2, smoother).tolist() == [False, True, True]
    assert classification_due([3, 4], 7, 1, smoother).all(), "every=1: every face on every frame"


@pytest.mark.parametrize("spec", ["ema:0.5", "mean:2"])
def test_update_frame_holds_the_tracks_not_due(spec):
    smoother = ProbabilitySmoother.from_spec(spec)
    first = smoother.update_frame([1, 2], [True, True], np.array([[1.0, 0.0], [0.0, 1.0]]))
    second = smoother.update_frame([1, 2], [False, True], np.array([[1.0, 0.0]]))  # one row: track 2's
    np.testing.assert_allclose(second[0], first[0], err_msg="track 1 not due: held")
    np.testing.assert_allclose(second[1], [0.5, 0.5], err_msg="track 2 smoothed with its new row")
    assert smoother.update_frame([], [], np.zeros((0, 2))).shape == (0, 2)


@pytest.mark.parametrize("spec", ["ema:0", "ema:1.5", "mean:0", "ema:x", "median:3", "none:1"])
def test_bad_smoothing_spec_names_it(spec):
    with pytest.raises(ValueError, match="smoothing"):
        ProbabilitySmoother.from_spec(spec)
