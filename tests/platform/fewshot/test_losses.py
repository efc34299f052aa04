"""The marginal loss for partial labels: MONAI's DiceCELoss when every class is annotated; no
penalty for an unannotated class predicted where the labels say 0."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from cardiossl.platform.fewshot.losses import marginal_dice_ce


@pytest.mark.parametrize("ce,dice", [(1.0, 1.0), (0.5, 2.0), (0.0, 1.0)])
def test_fully_annotated_it_is_monai_dice_ce(ce, dice):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 16, 16, generator=g)
    y = torch.randint(0, 4, (3, 1, 16, 16), generator=g)
    ref = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                     lambda_ce=ce, lambda_dice=dice)(x, y)
    got = marginal_dice_ce(x, y, torch.ones(3, 4, dtype=torch.bool), ce_weight=ce, dice_weight=dice)
    assert float(got) == pytest.approx(float(ref), rel=1e-5, abs=1e-6)


def test_an_unannotated_class_costs_nothing_where_the_labels_say_zero():
    y = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    y[0, 0, 2:6, 2:6] = 1  # LV cavity annotated; the rest is "background or RV"
    strong = 20.0

    def logits(rest_class: int) -> torch.Tensor:
        x = torch.zeros(1, 4, 8, 8)
        x[0, rest_class] = strong
        x[0, :, 2:6, 2:6] = 0
        x[0, 1, 2:6, 2:6] = strong
        return x

    partial = torch.tensor([[True, True, True, False]])  # RV (3) not annotated
    as_bg = marginal_dice_ce(logits(0), y, partial)
    as_rv = marginal_dice_ce(logits(3), y, partial)
    assert float(as_rv) == pytest.approx(float(as_bg), abs=1e-5)
    full = torch.ones(1, 4, dtype=torch.bool)
    assert float(marginal_dice_ce(logits(3), y, full)) > float(marginal_dice_ce(logits(0), y, full)) + 1.0
    # gradients flow to the annotated classes only through what the labels say
    x = logits(3).requires_grad_(True)
    marginal_dice_ce(x, y, partial).backward()
    assert torch.isfinite(x.grad).all()
