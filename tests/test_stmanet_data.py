"""ST-MANet's data additions: DenseSampler loop-padding [D32] and the U(0.5, 1) square crop → 112² [D33]."""

import numpy as np
import pytest
import torch

from tempo.data.samplers import DenseSampler
from tempo.data.transforms import RandomSquareResizedCrop


def test_loop_pad_wraps_short_videos_around_to_the_start():
    sampler = DenseSampler(clip_len=8, interval=2, loop_pad=True)
    for clips in (sampler.sample(10, np.random.default_rng(0)), sampler.sample(10)):
        np.testing.assert_array_equal(clips, [[0, 2, 4, 6, 8, 0, 2, 4]])
    np.testing.assert_array_equal(sampler.sample(3), [[0, 2, 1, 0, 2, 1, 0, 2]])
    # off (the default): frames past the end repeat the last one, as before
    np.testing.assert_array_equal(DenseSampler(8, 2).sample(10), [[0, 2, 4, 6, 8, 9, 9, 9]])
    assert DenseSampler(8, 2).loop_pad is False


@pytest.mark.parametrize("num_frames", [15, 16, 64, 301])
def test_loop_pad_leaves_clips_that_fit_unchanged(num_frames):
    plain, looped = DenseSampler(8, 2, num_clips=3), DenseSampler(8, 2, num_clips=3, loop_pad=True)
    np.testing.assert_array_equal(plain.sample(num_frames), looped.sample(num_frames))
    for seed in range(5):
        np.testing.assert_array_equal(plain.sample(num_frames, np.random.default_rng(seed)),
                                      looped.sample(num_frames, np.random.default_rng(seed)))


def test_stmanet_training_window_is_64_frames_at_stride_2():
    clip = DenseSampler(clip_len=32, interval=2, loop_pad=True).sample(200, np.random.default_rng(1))[0]
    assert len(clip) == 32 and (np.diff(clip) == 2).all() and clip[-1] - clip[0] == 62


def test_square_crop_side_is_uniform_fraction_of_the_short_side():
    torch.manual_seed(0)
    crop = RandomSquareResizedCrop(112, scale=(0.5, 1.0))
    boxes = [crop.box(120, 160) for _ in range(400)]
    sides = np.array([s for _, _, s in boxes])
    assert sides.min() >= 60 and sides.max() <= 120
    assert sides.min() < 66 and sides.max() > 114  # the whole range is drawn
    assert abs(sides.mean() - 90) < 3  # uniform: mean (60 + 120) / 2
    assert all(0 <= top <= 120 - s and 0 <= left <= 160 - s for top, left, s in boxes)
    assert len({(top, left) for top, left, _ in boxes}) > 100  # random positions


def test_square_crop_output_is_the_resized_square():
    torch.manual_seed(0)
    video = torch.randint(0, 255, (1, 4, 3, 40, 60), dtype=torch.uint8)
    out = RandomSquareResizedCrop(16)({"video": video, "label": 2})
    assert out["video"].shape == (1, 4, 3, 16, 16) and out["video"].dtype == torch.uint8 and out["label"] == 2
    # scale (1, 1) on a frame whose columns encode x: the crop is the full-height square, one draw per clip
    ramp = torch.arange(60, dtype=torch.uint8).expand(1, 4, 3, 40, 60).contiguous()
    full = RandomSquareResizedCrop(40, scale=(1.0, 1.0))({"video": ramp, "label": 0})["video"]
    left = int(full[0, 0, 0, 0, 0])
    assert full.shape[-2:] == (40, 40) and 0 <= left <= 20
    assert torch.equal(full[0, :, :, :, :], ramp[0, :, :, :, left:left + 40])


def test_square_crop_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        RandomSquareResizedCrop(112, scale=(0.5, 1.5))
