import pytest
import torch

from tempo.data.records import AnnotationError, VideoRecord, check_labels, read_list
from tempo.data.transforms import (
    CenterCrop,
    Compose,
    HorizontalFlip,
    MultiScaleCrop,
    RandomCrop,
    RandomResizedCrop,
    Resize,
    ResizeShortSide,
    ThreeCrop,
)


def test_read_video_and_frame_lists(tmp_path):
    videos = tmp_path / "videos.txt"
    videos.write_text("a/v 1.mp4 3\nb/v2.mp4 0\n\n")
    recs = read_list(videos, root="/data")
    assert recs == [VideoRecord("/data/a/v 1.mp4", 3), VideoRecord("/data/b/v2.mp4", 0)]
    frames = tmp_path / "frames.txt"
    frames.write_text("clip_a 120 4\n")
    assert read_list(frames, kind="frames") == [VideoRecord("clip_a", 4, num_frames=120)]


def test_line_with_too_few_fields_names_file_and_line(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("a.mp4 1\nb.mp4\n")
    with pytest.raises(AnnotationError, match=r"list.txt:2: expected '<path> <label>'"):
        read_list(bad)
    with pytest.raises(AnnotationError, match=r"list.txt:1: expected '<frame_dir> <num_frames> <label>'"):
        read_list(bad, kind="frames")


def test_multi_label_line_rejected(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("a.mp4 1 2\n")
    with pytest.raises(AnnotationError, match="several labels"):
        read_list(bad)


def test_missing_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_list(tmp_path / "nope.txt")


def test_label_out_of_range_names_record():
    with pytest.raises(AnnotationError, match=r"train list: record 1 \(b.mp4\) has label 5, outside \[0, 5\)"):
        check_labels([VideoRecord("a.mp4", 0), VideoRecord("b.mp4", 5)], 5, "train list")
    check_labels([VideoRecord("c.mp4", -1)], 5, "test list")


def clip(v=1, t=4, h=60, w=80):
    video = torch.arange(v * t * 3 * h * w, dtype=torch.int64).remainder(251).to(torch.uint8)
    return {"video": video.view(v, t, 3, h, w), "label": 2}


@pytest.mark.parametrize("transform, shape", [
    (ResizeShortSide(30), (1, 4, 3, 30, 40)),
    (Resize(24, 32), (1, 4, 3, 24, 32)),
    (CenterCrop(50), (1, 4, 3, 50, 50)),
    (RandomCrop(50), (1, 4, 3, 50, 50)),
    (ThreeCrop(50), (3, 4, 3, 50, 50)),
    (MultiScaleCrop(32), (1, 4, 3, 32, 32)),
    (RandomResizedCrop(32), (1, 4, 3, 32, 32)),
    (Compose([ResizeShortSide(40), ThreeCrop(40)]), (3, 4, 3, 40, 40)),
])
def test_transform_shapes_keep_uint8(transform, shape):
    out = transform(clip())
    assert tuple(out["video"].shape) == shape and out["video"].dtype == torch.uint8


def test_one_draw_per_clip_same_crop_for_all_frames():
    sample = clip(t=6)
    sample["video"][:] = sample["video"][:, :1]  # identical frames
    torch.manual_seed(0)
    for t in (RandomCrop(30), MultiScaleCrop(30), RandomResizedCrop(30), HorizontalFlip(1.0)):
        out = t(sample)["video"][0]
        assert all(torch.equal(out[0], out[i]) for i in range(6))


def test_three_crop_left_centre_right():
    sample = clip(h=40, w=100)
    crops = ThreeCrop(40)(sample)["video"]
    full = sample["video"][0]
    assert torch.equal(crops[0], full[..., :, 0:40])
    assert torch.equal(crops[1], full[..., :, 30:70])
    assert torch.equal(crops[2], full[..., :, 60:100])


def test_flip_swaps_labels_through_map():
    flip = HorizontalFlip(p=1.0, label_map=[0, 2, 1])
    out = flip({"video": clip()["video"], "label": 1})
    assert out["label"] == 2
    assert torch.equal(out["video"], clip()["video"].flip(-1))
    assert flip({"video": clip()["video"], "label": 0})["label"] == 0
    assert HorizontalFlip(p=1.0)({"video": clip()["video"], "label": 1})["label"] == 1
    assert HorizontalFlip(p=0.0)(clip())["video"].equal(clip()["video"])


def test_multiscale_crop_sizes_come_from_scales():
    t = MultiScaleCrop(32, scales=(1, 0.4), max_distort=0, more_fix_crop=False)
    torch.manual_seed(1)
    h, w = 60, 80
    for _ in range(20):
        ch, cw = t._crop_size(h, w)
        assert ch == cw and ch in (60, 24)
        assert all(0 <= y <= h - ch and 0 <= x <= w - cw for y, x in t._offsets(h, w, ch, cw))
