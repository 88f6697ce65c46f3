import numpy as np
import pytest

from tempo.data.samplers import ConsecutiveSampler, DenseSampler, SegmentSampler

SAMPLERS = [SegmentSampler(8), DenseSampler(8, 2), ConsecutiveSampler(8, 2, stride=4)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("num_frames", [1, 5, 8, 16, 100, 301])
def test_indices_in_range_and_shape(sampler, num_frames):
    rng = np.random.default_rng(0)
    for clips in (sampler.sample(num_frames, rng), sampler.sample(num_frames)):
        assert clips.dtype == np.int64
        assert clips.shape[1] == sampler.clip_frames
        assert clips.min() >= 0 and clips.max() <= num_frames - 1
        assert (np.diff(clips, axis=1) >= 0).all(), "frames must be in temporal order"
    assert sampler.sample(num_frames, rng).shape[0] == 1


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_train_sampling_is_deterministic_by_seed_and_random_across_seeds(sampler):
    a = sampler.sample(200, np.random.default_rng(3))
    b = sampler.sample(200, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    draws = {tuple(sampler.sample(200, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(draws) > 1


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_eval_sampling_is_deterministic(sampler):
    np.testing.assert_array_equal(sampler.sample(123), sampler.sample(123))


def test_segment_sampler_one_frame_per_segment():
    s = SegmentSampler(8)
    n = 80
    for seed in range(10):
        idx = s.sample(n, np.random.default_rng(seed))[0]
        assert ((idx // 10) == np.arange(8)).all()
    centres = s.sample(n)[0]
    np.testing.assert_array_equal(centres, np.arange(8) * 10 + 5)


def test_segment_sampler_multi_clip_spreads_offsets():
    clips = SegmentSampler(4, num_clips=2).sample(40)
    np.testing.assert_array_equal(clips, [[2, 12, 22, 32], [7, 17, 27, 37]])


def test_dense_sampler_interval_and_uniform_test_clips():
    s = DenseSampler(4, 3, num_clips=5)
    clips = s.sample(100)
    assert clips.shape == (5, 4)
    assert (np.diff(clips, axis=1) == 3).all()
    starts = clips[:, 0]
    assert starts[0] >= 0 and clips[-1, -1] <= 99
    assert np.ptp(np.diff(starts)) <= 1, "test clips are uniformly spaced"
    centre = DenseSampler(4, 3).sample(100)[0]
    assert centre[0] == (100 - s.span) // 2


def test_dense_sampler_short_video_repeats_last_frame():
    clip = DenseSampler(8, 2).sample(5, np.random.default_rng(0))[0]
    assert clip[-1] == 4 and clip[0] == 0


def test_consecutive_sampler_covers_video():
    s = ConsecutiveSampler(clip_len=4, interval=2, stride=3)
    clips = s.sample(20)
    assert clips[0, 0] == 0
    assert (np.diff(clips[:, 0]) == 3).all()
    assert clips[-1, -1] >= 20 - 3 - 1
    assert ConsecutiveSampler(4, 2, 3, max_clips=2).sample(20).shape[0] == 2
