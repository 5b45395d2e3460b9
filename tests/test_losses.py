"""Seed sampling, partial cross-entropy, the log-barrier size term, flip consistency and the soft-target BCE."""

from __future__ import annotations

import math

import pytest
import torch

from fcam_plugin.losses.cam_prior import cam_prior
from fcam_plugin.losses.cross_entropy import PartialCrossEntropy, partial_cross_entropy
from fcam_plugin.losses.flip import FlipConsistency, flip_consistency
from fcam_plugin.losses.size import BarrierSchedule, LogBarrierSize, log_barrier, log_barrier_size
from fcam_plugin.losses.soft_target import soft_target_bce
from fcam_plugin.seeds import IGNORE_INDEX, otsu_threshold, sample_seeds


def _square_cam(size: int = 48, lo: int = 12, hi: int = 36) -> torch.Tensor:
    cam = torch.zeros(1, 1, size, size)
    cam[..., lo:hi, lo:hi] = 1.0
    return cam


def test_otsu_separates_two_levels() -> None:
    x = torch.cat([torch.full((1, 100), 0.2), torch.full((1, 50), 0.8)], dim=1)
    t = otsu_threshold(x)
    assert 0.2 <= float(t) < 0.8
    assert ((x > t).sum() == 50).item()


def test_seeds_fall_inside_the_right_regions() -> None:
    cam = _square_cam()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        seeds = sample_seeds(cam, n_fg=2, n_bg=2, patch_size=3, erosion_size=11, generator=g)[0]
        fg = seeds == 1
        bg = seeds == 0
        assert fg.any() and bg.any()
        # foreground seeds (grown by 1 px) lie in the square eroded by 5 px, grown back by 1 px
        assert not fg[:16, :].any() and not fg[32:, :].any()
        assert not fg[:, :16].any() and not fg[:, 32:].any()
        # background seeds (3x3 patches) lie outside the square
        inner = torch.zeros_like(bg)
        inner[13:35, 13:35] = True
        assert not (bg & inner).any()
        assert ((seeds == IGNORE_INDEX) | fg | bg).all()


def test_seed_counts_and_patch_size() -> None:
    cam = _square_cam(64, 8, 56)
    seeds = sample_seeds(cam, n_fg=1, n_bg=1, patch_size=5, erosion_size=3, generator=torch.Generator().manual_seed(1))
    assert int((seeds == 1).sum()) == 25


def test_erosion_falls_back_when_it_removes_everything() -> None:
    cam = _square_cam(32, 14, 18)  # 4x4 region, eroded away by 11x11
    seeds = sample_seeds(cam, erosion_size=11, patch_size=1, generator=torch.Generator().manual_seed(0))
    ys, xs = torch.nonzero(seeds[0] == 1, as_tuple=True)
    assert len(ys) == 1 and 14 <= ys.item() < 18 and 14 <= xs.item() < 18


def test_seeds_are_reproducible_and_batched() -> None:
    cam = torch.rand(3, 1, 40, 40)
    a = sample_seeds(cam, generator=torch.Generator().manual_seed(5))
    b = sample_seeds(cam, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (3, 40, 40)


def _two_level_cams(count: int) -> torch.Tensor:
    """``count`` CAMs whose foreground square is 0.6 on its left half and 1.0 on its right half."""
    cam = torch.zeros(count, 1, 32, 32)
    cam[..., 8:24, 8:16] = 0.6
    cam[..., 8:24, 16:24] = 1.0
    return cam


def _share_on_the_strong_half(fg_power: float) -> float:
    seeds = sample_seeds(_two_level_cams(400), patch_size=1, erosion_size=1, fg_power=fg_power,
                         generator=torch.Generator().manual_seed(0))
    fg = seeds == 1
    return float(fg[..., 16:24].sum() / fg.sum())


def test_foreground_seeds_favour_strong_cam_pixels_with_fg_power() -> None:
    assert 0.4 < _share_on_the_strong_half(0.0) < 0.6  # uniform, as in the paper
    assert 0.6 < _share_on_the_strong_half(1.0) < 0.72  # 1 / (1 + 0.6) = 0.625
    assert _share_on_the_strong_half(8.0) > 0.95  # 1 / (1 + 0.6 ** 8) = 0.983


def test_fg_power_draws_uniformly_among_equally_faint_candidates() -> None:
    cams = torch.zeros(64, 1, 16, 16)
    cams[..., 4:12, 4:12] = 0.01  # a faint region: u ** (1 / 0.01 ** 2) underflows to 0 for most u
    seeds = sample_seeds(cams, patch_size=1, fg_power=2.0, generator=torch.Generator().manual_seed(0))
    picked = (seeds == 1).flatten(1).float().argmax(1)
    assert len(set(picked.tolist())) > 32  # spread over the 64 candidates, not tied on one pixel


def test_fg_power_moves_foreground_seeds_only() -> None:
    cams = torch.rand(4, 1, 40, 40)
    uniform = sample_seeds(cams, fg_power=0, generator=torch.Generator().manual_seed(3))
    weighted = sample_seeds(cams, fg_power=2.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(uniform == 0, weighted == 0)  # background seeds are drawn as before
    assert not torch.equal(uniform == 1, weighted == 1)  # from the same random keys, other foreground pixels


def test_constant_cam_gives_no_conflicting_labels() -> None:
    seeds = sample_seeds(torch.zeros(2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    assert ((seeds == IGNORE_INDEX) | (seeds == 0) | (seeds == 1)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cams=torch.zeros(2, 3, 8, 8)), "cams"),
        (dict(cams=torch.zeros(1, 8, 8), patch_size=2), "patch_size"),
        (dict(cams=torch.zeros(1, 8, 8), erosion_size=0), "erosion_size"),
        (dict(cams=torch.zeros(1, 8, 8), n_fg=-1), "n_fg"),
        (dict(cams=torch.zeros(1, 8, 8), fg_power=-1.0), "fg_power"),
        (dict(cams=torch.zeros(1, 8, 8), bg_percentile=100), "bg_percentile"),
    ],
)
def test_seed_arguments_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_seeds(**kwargs)


def test_partial_ce_uses_only_seed_pixels() -> None:
    logits = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    seeds = torch.full((2, 8, 8), IGNORE_INDEX)
    seeds[0, 1, 1] = 1
    seeds[1, 5, 6] = 0
    loss = partial_cross_entropy(logits, seeds)
    expected = -(
        torch.log_softmax(logits[0, :, 1, 1], 0)[1] + torch.log_softmax(logits[1, :, 5, 6], 0)[0]
    ) / 2
    assert torch.allclose(loss.double(), expected)
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert int((grad > 0).sum()) == 2
    assert torch.allclose(PartialCrossEntropy()(logits, seeds), loss)


def test_partial_ce_without_seeds_is_zero_not_nan() -> None:
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_log_barrier_values_and_continuity() -> None:
    t = 2.0
    edge = -1 / t**2
    z = torch.tensor([-4.0, edge, 0.5], dtype=torch.float64)
    out = log_barrier(z, t)
    assert math.isclose(out[0].item(), -math.log(4.0) / t)
    assert math.isclose(out[1].item(), -math.log(-edge) / t)
    assert math.isclose(out[2].item(), t * 0.5 - math.log(1 / t**2) / t + 1 / t)
    eps = 1e-7
    left = log_barrier(torch.tensor(edge - eps, dtype=torch.float64), t)
    right = log_barrier(torch.tensor(edge + eps, dtype=torch.float64), t)
    assert abs(left.item() - right.item()) < 1e-5


def test_log_barrier_gradients_match_closed_form() -> None:
    t = 3.0
    z = torch.tensor([-10.0, -0.05, 2.0], dtype=torch.float64, requires_grad=True)
    log_barrier(z, t).sum().backward()
    expected = torch.tensor([-1 / (t * -10.0), t, t], dtype=torch.float64)
    assert torch.allclose(z.grad, expected)
    assert torch.autograd.gradcheck(lambda v: log_barrier(v, t), (z.detach().clone().requires_grad_(),))


def test_size_barrier_never_infinite() -> None:
    for t in (1.0, 10.0, 1e4):
        probs = torch.zeros(2, 2, 8, 8, requires_grad=True)
        loss = log_barrier_size(probs, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(probs.grad).all()


def test_size_barrier_rewards_keeping_both_regions() -> None:
    balanced = torch.full((1, 2, 16, 16), 0.5)
    collapsed = torch.stack([torch.ones(16, 16), torch.zeros(16, 16)])[None]
    assert log_barrier_size(balanced, 1.0) < log_barrier_size(collapsed, 1.0)
    assert torch.equal(LogBarrierSize()(balanced, 1.0), log_barrier_size(balanced, 1.0))


def test_barrier_schedule_is_the_reference_one() -> None:
    schedule = BarrierSchedule()
    assert schedule(0) == 1.0
    assert math.isclose(schedule(1), 1.01)
    assert schedule(1000) == 10.0
    with pytest.raises(ValueError, match="t0"):
        BarrierSchedule(t0=0)


def test_flip_consistency_is_zero_for_mirrored_maps_and_pulls_both() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 1, 8, 6, generator=generator)
    assert flip_consistency(maps, maps.flip(-1)).item() == 0.0
    assert FlipConsistency()(maps, maps.flip(-1)).item() == 0.0
    a, b = maps.clone().requires_grad_(), torch.rand(2, 1, 8, 6, generator=generator).requires_grad_()
    flip_consistency(a, b).backward()
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    torch.testing.assert_close(a.grad, -b.grad.flip(-1))
    with pytest.raises(ValueError, match="`mirrored`"):
        flip_consistency(maps, maps[:, :, :4])


def test_soft_target_bce_is_lowest_at_the_target_and_does_not_move_it() -> None:
    target = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    foreground = torch.full((2, 1, 8, 8), 0.5, requires_grad=True)
    at_target, elsewhere = soft_target_bce(target.detach(), target), soft_target_bce(foreground, target)
    assert at_target.item() < elsewhere.detach().item()
    elsewhere.backward()
    assert target.grad is None and foreground.grad is not None


@pytest.mark.parametrize(("loss", "name"), [(soft_target_bce, "`target`"), (cam_prior, "`cams`")])
def test_soft_target_shape_errors_name_the_argument(loss, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        loss(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))
