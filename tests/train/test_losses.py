"""Training criteria against hand-written formulas."""

from __future__ import annotations

import pytest
import torch

from convnext_fast.train.losses import classification_loss, regression_loss


def test_weighted_label_smoothed_cross_entropy_matches_its_formula():
    n, eps = 64, 0.1
    logits, y = torch.randn(n, 3) * 3, torch.randint(0, 3, (n,))
    weights = torch.rand(3) + 0.2
    logp = torch.log_softmax(logits, dim=1)
    # Smoothed target q = (1 - eps) onehot + eps / 3; each row weighted by the class weight of its label,
    # PyTorch's convention for the smoothing term being sum_c w_c q_c (-log p_c).
    onehot = torch.nn.functional.one_hot(y, 3).float()
    nll = -(onehot * logp).sum(1) * weights[y]
    smooth = -(weights * logp).sum(1) / 3
    expected = ((1 - eps) * nll.sum() + eps * smooth.sum()) / weights[y].sum()
    got = classification_loss(weights, label_smoothing=eps)(logits, y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_unweighted_unsmoothed_loss_is_plain_cross_entropy():
    logits, y = torch.randn(32, 3), torch.randint(0, 3, (32,))
    expected = -torch.log_softmax(logits, 1)[torch.arange(32), y].mean()
    torch.testing.assert_close(classification_loss(None, 0.0)(logits, y), expected)


def test_regression_losses():
    pred, target = torch.randn(40, 2) * 2, torch.randn(40, 2) * 2
    torch.testing.assert_close(regression_loss("mse")(pred, target), ((pred - target) ** 2).mean())
    delta = 0.7
    err = (pred - target).abs()
    huber = torch.where(err < delta, 0.5 * err**2, delta * (err - 0.5 * delta)).mean()
    torch.testing.assert_close(regression_loss("huber", delta)(pred, target), huber)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: classification_loss(None, 1.0), "label_smoothing"),
        (lambda: classification_loss(torch.tensor([1.0, -1.0, 1.0])), "class_weights"),
        (lambda: regression_loss("l1"), "regression loss"),
        (lambda: regression_loss("huber", 0.0), "huber_delta"),
    ],
)
def test_losses_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
