"""The segmentation loss when some subjects annotate only some classes (partial labels).

Sunnybrook contours the LV cavity and myocardium only: its 0 means "background or RV". Treating
that 0 as background teaches the network that the RV is background. The marginal loss (Shi et
al., "Marginal loss and exclusion loss for partially supervised multi-organ segmentation", MedIA
2021; Fang & Yan, IEEE TMI 2020) instead merges, per sample, the probabilities of the classes the
sample does not annotate into its background before the cross-entropy, and leaves those classes out
of the Dice term. With every class annotated it is exactly MONAI's ``DiceCELoss`` (softmax, batch
Dice, background excluded, smoothing 1e-5) as the fully labelled path uses.
"""

from __future__ import annotations


def marginal_dice_ce(logits, target, annotated, *, ce_weight: float = 1.0, dice_weight: float = 1.0,
                     smooth: float = 1e-5):
    """``logits`` [B, C, H, W]; ``target`` [B, 1, H, W] integer labels; ``annotated`` [B, C] bool
    (which classes each sample's labels cover; class 0 is always covered)."""
    import torch

    ann = annotated.to(device=logits.device, dtype=torch.bool).clone()
    ann[:, 0] = True
    t = target[:, 0].long()
    logp = torch.log_softmax(logits.float(), dim=1)
    merged = ~ann
    merged[:, 0] = True  # background absorbs the unannotated classes
    log_bg = torch.logsumexp(logp.masked_fill(~merged[:, :, None, None], float("-inf")), dim=1)
    log_pt = torch.where(t == 0, log_bg, logp.gather(1, t[:, None])[:, 0])
    ce = -log_pt.mean()

    p = logp.exp()
    onehot = torch.nn.functional.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    w = ann[:, 1:].to(p.dtype)[:, :, None, None]  # a sample counts for class c only if it annotates c
    inter = (w * p[:, 1:] * onehot[:, 1:]).sum(dim=(0, 2, 3))
    denom = (w * (p[:, 1:] + onehot[:, 1:])).sum(dim=(0, 2, 3))
    dice = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    present = ann[:, 1:].any(dim=0)
    dice_term = dice[present].mean() if bool(present.any()) else logits.sum() * 0.0
    return ce_weight * ce + dice_weight * dice_term
