"""Training objectives of the seed papers, on one batch of the fusion decoder's outputs.

- ``dicece`` (medvlsm): Dice + binary cross-entropy, weights 1 : 0.2, on the valid (unpadded) model frame.
- ``tmca`` (TMCA, arXiv 2412.13533): Dice + CE plus target-informed multi-level contrastive alignment. For each
  image level (encoder neck, encoder first stage, decoder mask features) the image side of the distance is
  *target-sensitive*: the level's projected features pooled inside the ground-truth target, with the same image's
  background pooled the same way as the hard negative of its own text. The sentence is aligned to its target
  against the other targets and all backgrounds of the batch (InfoNCE both ways; rows with the same text are all
  positives). The aligned projections also drive the language-guided target enhancement in the decoder. TMCA
  publishes no code: this is our reading of the paper's description, with weight ``align_weight`` (0.1).
- ``reclmis`` (RecLMIS, TMI 2024): Dice + CE plus the conditioned contrastive loss (word-patch maximum similarity
  weighted by the words and patches of interest) and the conditioned reconstructions (50 % of the patches, drawn by
  their interest, rebuilt from the words; 30 % of the words rebuilt from the patches; MSE to the frozen encoders'
  features). Published weights seg 5, contrastive 0.2, reconstruction 1 + 1, divided by 5 here so the
  segmentation term has the same scale in every option.

With the decoder's presence head (any option), binary cross-entropy of its presence logit against "the target
mask is not empty", weight ``PRESENCE_WEIGHT``; the mask terms train the logits before the presence gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...models.text_decoder import DecoderOutput, TextPromptDecoder

LOSSES = ("dicece", "tmca", "reclmis")
CE_WEIGHT = 0.2  # medvlsm: Dice 1, CE 0.2
ALIGN_WEIGHT = 0.1
RECLMIS_WEIGHTS = {"seg": 5.0, "contrast": 0.2, "rec_image": 1.0, "rec_text": 1.0}
IMAGE_MASK_RATE, TEXT_MASK_RATE = 0.5, 0.3  # RecLMIS
PRESENCE_WEIGHT = 0.5


@dataclass
class Batch:
    features: torch.Tensor  # (B, C, g, g)
    low: torch.Tensor | None  # (B, C_low, g, g)
    target: torch.Tensor  # (B, 1, s, s) in [0, 1]
    valid: torch.Tensor  # (B, 1, s, s) bool
    words: torch.Tensor  # (B, T, text_dim)
    word_mask: torch.Tensor  # (B, T) bool
    sentence: torch.Tensor  # (B, text_dim)
    texts: list[str]


def dice_ce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """medvlsm's Dice + 0.2 CE over the valid region; an empty target asks for an empty prediction."""
    v = valid.float()
    prob = torch.sigmoid(logits) * v
    dims = (1, 2, 3)
    dice = 1 - (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + (target * v).sum(dims) + 1)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    ce = (ce * v).sum(dims) / v.sum(dims).clamp(min=1)
    loss = dice.mean() + CE_WEIGHT * ce.mean()
    return loss, {"dice_loss": float(dice.detach().mean()), "ce": float(ce.detach().mean())}


def _same_text(texts: list[str], device) -> torch.Tensor:
    return torch.tensor([[a == b for b in texts] for a in texts], device=device)


def _soft_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a uniform distribution over each row's positives (rows without one are skipped)."""
    rows = positives.any(1)
    if not rows.any():
        return logits.sum() * 0
    target = positives[rows].float()
    target = target / target.sum(1, keepdim=True)
    return -(target * F.log_softmax(logits[rows], dim=1)).sum(1).mean()


def _pooled(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) features averaged under (B, 1, h, w) weights -> (B, C)."""
    return (x * weight).sum((2, 3)) / weight.sum((2, 3)).clamp(min=1e-6)


def tmca_alignment(decoder: TextPromptDecoder, out: DecoderOutput, batch: Batch) -> tuple[torch.Tensor, dict]:
    """Target-informed contrastive alignment of the sentence with each image level (mean over levels)."""
    levels = {"high": batch.features, "mask": out.mask_features}
    if batch.low is not None and "low" in decoder.align_image:
        levels["low"] = batch.low
    same = _same_text(batch.texts, batch.features.device)
    scale = decoder.align_logit_scale.exp().clamp(max=100)
    terms = {}
    for level, image in levels.items():
        proj = decoder.align_image[level](image)
        size = proj.shape[-2:]
        fg = F.adaptive_avg_pool2d(batch.target, size)
        valid = F.adaptive_avg_pool2d(batch.valid.float(), size)
        bg = (valid - fg).clamp(min=0)
        has_target = fg.sum((1, 2, 3)) > 1e-3
        f_fg = F.normalize(_pooled(proj, fg), dim=-1)
        f_bg = F.normalize(_pooled(proj, bg), dim=-1)
        text = F.normalize(decoder.align_text[level](batch.sentence), dim=-1)
        # text -> [targets of the batch, backgrounds of the batch]: positives are the targets with the same text
        t2i = scale * text @ torch.cat([f_fg, f_bg]).T
        pos_t2i = torch.cat([same & has_target[None, :], torch.zeros_like(same)], dim=1)
        # target -> texts of the batch
        i2t = scale * f_fg @ text.T
        pos_i2t = same & has_target[:, None]
        terms[level] = (_soft_ce(t2i, pos_t2i) + _soft_ce(i2t, pos_i2t)) / 2
    loss = torch.stack(list(terms.values())).mean()
    return loss, {f"align_{k}": float(v.detach()) for k, v in terms.items()}


def _draw(weights: torch.Tensor, counts: list[int], generator: torch.Generator) -> torch.Tensor:
    """(B, N) bool: for each row, ``counts[b]`` positions drawn without replacement with probability ~ weights."""
    chosen = torch.zeros_like(weights, dtype=torch.bool)
    w = weights.detach().float().cpu()
    for b, k in enumerate(counts):
        row = w[b].clamp(min=0)
        k = min(k, int((row > 0).sum()))
        if k > 0:
            idx = torch.multinomial(row, k, replacement=False, generator=generator)
            chosen[b, idx.to(chosen.device)] = True
    return chosen


def reclmis_terms(
    decoder: TextPromptDecoder, out: DecoderOutput, batch: Batch, generator: torch.Generator
) -> tuple[torch.Tensor, dict]:
    """Conditioned contrastive loss + masked image/text reconstruction, weighted as published (÷ the seg weight)."""
    c = decoder.config
    mask = batch.word_mask
    word_w = torch.softmax(out.word_logits, dim=-1).nan_to_num(0.0)  # (B, T), 0 on padding
    patch_w = torch.softmax(out.patch_logits, dim=-1)  # (B, N)
    k = c.grid // c.interaction_grid
    frozen_patches = F.avg_pool2d(batch.features, k).flatten(2).transpose(1, 2).detach()  # (B, N, C)

    n_patches = patch_w.shape[1]
    masked_patches = _draw(patch_w, [int(IMAGE_MASK_RATE * n_patches)] * len(batch.texts), generator)
    rebuilt = decoder.image_reconstructor(out.conditioned_patches, masked_patches, out.conditioned_words, word_w)
    rec_image = F.mse_loss(rebuilt, frozen_patches)

    lengths = mask.sum(1).tolist()
    masked_words = _draw(word_w, [max(1, int(TEXT_MASK_RATE * n)) for n in lengths], generator)
    rebuilt_words = decoder.text_reconstructor(
        out.conditioned_words, masked_words, out.conditioned_patches, patch_w, padding=~mask
    )
    rec_text = ((rebuilt_words - batch.words) ** 2).mean(-1)[mask].mean()

    # conditioned contrastive: every word's best patch and every patch's best word, weighted by interest
    words = F.normalize(out.word_tokens, dim=-1)
    patches = F.normalize(decoder.contrast_image(frozen_patches), dim=-1)
    sim = torch.einsum("atd,bnd->abtn", words, patches)
    t2v = (sim.max(-1).values * word_w[:, None, :]).sum(-1)  # (A, B)
    sim = sim.masked_fill(~mask[:, None, :, None], float("-inf"))
    v2t = (sim.max(-2).values * patch_w[None, :, :]).sum(-1)
    logits = decoder.contrast_logit_scale.exp().clamp(max=100) * (t2v + v2t) / 2
    same = _same_text(batch.texts, logits.device)
    contrast = (_soft_ce(logits, same) + _soft_ce(logits.T, same)) / 2

    w = RECLMIS_WEIGHTS
    loss = (w["contrast"] * contrast + w["rec_image"] * rec_image + w["rec_text"] * rec_text) / w["seg"]
    return loss, {
        k: float(v.detach()) for k, v in (("contrast", contrast), ("rec_image", rec_image), ("rec_text", rec_text))
    }


def batch_loss(
    name: str, decoder: TextPromptDecoder, batch: Batch, generator: torch.Generator
) -> tuple[torch.Tensor, dict]:
    """The loss option ``name`` on one batch: (scalar loss, its parts for the log)."""
    out = decoder(
        batch.features, batch.low, batch.words, batch.word_mask, batch.sentence, return_features=name == "tmca"
    )
    loss, parts = dice_ce(out.mask_logits, batch.target, batch.valid)
    if out.presence_logits is not None:
        present = ((batch.target * batch.valid).sum((1, 2, 3)) > 0).float()
        presence = F.binary_cross_entropy_with_logits(out.presence_logits, present)
        loss = loss + PRESENCE_WEIGHT * presence
        parts["presence"] = float(presence.detach())
    if name == "tmca":
        extra, more = tmca_alignment(decoder, out, batch)
        loss = loss + ALIGN_WEIGHT * extra
        parts.update(more)
    elif name == "reclmis":
        extra, more = reclmis_terms(decoder, out, batch, generator)
        loss = loss + extra
        parts.update(more)
    parts["loss"] = float(loss.detach())
    return loss, parts
