"""The trainable part of the text-conditioned segmenter: frozen image features + frozen text tokens -> mask logits.

Base design (every loss option trains it):

- SAM's mask decoder (two-way transformer, upscaling, hypernetwork), initialised from the image encoder's own
  SAM-family checkpoint (LiteMedSAM by default), is prompted by text instead of boxes: the sentence embedding
  becomes two prompt tokens, initialised to the prompt encoder's embedding of a whole-image box (so the untrained
  model answers as LiteMedSAM does for "everything"), and every word token becomes one more prompt token. The
  two-way transformer is the text-guided cross-attention over the image features;
- the encoder's first-stage features (colour and texture, pooled to the embedding grid) join the decoder's output
  image tokens before the upscaling, through a zero-initialised projection (HQ-SAM's early-layer fusion; the
  multi-level image side TMCA aligns with text). Joining at the 64 x 64 grid, not after the upscaling, saves the
  backward pass of a 256 x 256 interpolation (a fifth of a training step).

Switchable modules of the seed papers (zero-initialised where they join the base path, so they start as no-ops):

- ``alignment`` (TMCA): projections of three image levels (encoder neck, encoder first stage, decoder mask
  features) and of the sentence into a shared space, trained by target-informed contrastive alignment
  (:mod:`..methods.text_training.losses`); with ``enhance``, the language-guided target enhancement: the
  text-to-pixel similarity of the aligned levels gates the image features and the dense prompt;
- ``interaction`` (RecLMIS): cross-attention of words to pooled image patches and back (the conditioned
  interaction); scores of patches and words of interest; the conditioned words replace the word prompt tokens and
  the conditioned patches join the dense prompt; heads that reconstruct masked patches from words and masked
  words from patches.

``presence`` (for class-name texts with negative pairs): an image-text classifier (:class:`PresenceHead`) scores
whether the named target is in the image at all, trained by binary cross-entropy on positive and negative pairs.
Where it says absent (logit < 0) the mask logits are capped at the presence logit, so the mask is empty and the
heatmap no higher than the presence probability. Why a classifier and not only empty masks: on an empty target the
soft Dice term is 1 - 1 / (1 + sum of probabilities), whose gradient vanishes once the false positive is large (a
whole lung field), so a large wrong-name mask is pushed down only by the weak per-pixel CE; the classifier gets one
full-strength decision per pair. It reads the frozen inputs, not the decoder's tokens, so the mask path trains
exactly as without it (a head on SAM's output tokens, tried first, cost nuclei a quarter of their Dice), and it is
refitted alone once the decoder has trained (:mod:`..methods.text_training.presence`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from . import sam_decoder_fast
from ._sam_modeling import sam_modeling
from .fused_ops import linear

_sam = sam_modeling()
MaskDecoder, TwoWayTransformer = _sam.MaskDecoder, _sam.TwoWayTransformer
LayerNorm2d, PositionEmbeddingRandom = _sam.common.LayerNorm2d, _sam.prompt_encoder.PositionEmbeddingRandom


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of :class:`TextPromptDecoder`; stored in the checkpoint's JSON config."""

    text_dim: int = 384  # width of the text encoder's token states (MiniLM-L6: 384)
    embed_dim: int = 256  # SAM decoder width = image embedding channels
    grid: int = 64  # image embedding grid (64 x 64 for LiteMedSAM and SAM)
    low_level_dim: int = 128  # channels of the encoder's first-stage features; 0 = no low-level fusion
    sentence_tokens: int = 2
    word_tokens: bool = True
    alignment: bool = False  # TMCA projections (trained by the alignment loss)
    enhance: bool = False  # TMCA language-guided target enhancement (needs alignment)
    align_dim: int = 128
    interaction: bool = False  # RecLMIS conditioned interaction + reconstruction heads
    interaction_grid: int = 16  # patches of the interaction: the embedding average-pooled to this grid
    presence: bool = False  # target-presence head gating the mask (trained on negative pairs)
    heads: int = 8

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown decoder settings {unknown}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # (B, 1, 4 grid, 4 grid) mask logits in the padded model-input frame (presence-gated)
    mask_logits: torch.Tensor | None = None  # the logits before the presence gate (what the mask loss trains)
    presence_logits: torch.Tensor | None = None  # (B,) is the named target in the image (presence head)
    mask_features: torch.Tensor | None = None  # (B, 32, 4 grid, 4 grid) the decoder's upscaled features
    word_tokens: torch.Tensor | None = None  # (B, T, C) projected word tokens before the interaction
    conditioned_words: torch.Tensor | None = None  # (B, T, C) after the interaction (RecLMIS)
    conditioned_patches: torch.Tensor | None = None  # (B, N, C)
    word_logits: torch.Tensor | None = None  # (B, T) words of interest (-inf on padding)
    patch_logits: torch.Tensor | None = None  # (B, N) patches of interest


def _zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _CrossLayer(nn.Module):
    """Transformer decoder layer whose cross-attention can be biased by per-key weights (RecLMIS reconstruction:
    attention multiplied by the weights of interest, i.e. log-weights added to the logits)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_log_weight: torch.Tensor, x_padding: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, x, x, key_padding_mask=x_padding, need_weights=False)[0])
        bias = memory_log_weight[:, None, None, :].expand(-1, self.heads, x.shape[1], -1)
        bias = bias.reshape(-1, x.shape[1], memory.shape[1])
        x = self.norm2(x + self.cross_attn(x, memory, memory, attn_mask=bias, need_weights=False)[0])
        return self.norm3(x + self.mlp(x))


class Reconstructor(nn.Module):
    """Masked tokens of one modality + the other modality's tokens (weighted by interest) -> target features."""

    def __init__(self, dim: int, out_dim: int, heads: int, layers: int = 2) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.layers = nn.ModuleList(_CrossLayer(dim, heads) for _ in range(layers))
        self.out = nn.Linear(dim, out_dim)

    def forward(
        self,
        tokens: torch.Tensor,
        masked: torch.Tensor,
        memory: torch.Tensor,
        memory_weight: torch.Tensor,
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = torch.where(masked.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        log_weight = torch.log(memory_weight.clamp(min=1e-6))  # zero weight (padding) = no attention
        for layer in self.layers:
            x = layer(x, memory, log_weight, padding)
        return self.out(x)


class PresenceHead(nn.Module):
    """Is the named target in the image: the image levels mean- and max-pooled, the sentence, and their product."""

    def __init__(self, image_dim: int, text_dim: int, dim: int = 256) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.LayerNorm(2 * image_dim), nn.Linear(2 * image_dim, dim))
        self.text = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.score = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    @staticmethod
    def pool(levels: list[torch.Tensor]) -> torch.Tensor:
        """levels [(B, C_k, h, w)] -> (B, 2 sum C_k): what the head sees of the image (a refit computes it once)."""
        return torch.cat([x.mean((2, 3)) for x in levels] + [x.amax((2, 3)) for x in levels], dim=1)

    def classify(self, pooled: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """pooled (B, 2 sum C_k), sentence (B, text_dim) -> (B,) presence logits."""
        image, text = self.image(pooled), self.text(sentence)
        return self.score(torch.cat([image, text, image * text], dim=1))[:, 0]

    def forward(self, levels: list[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """levels [(B, C_k, h, w)], sentence (B, text_dim) -> (B,) presence logits."""
        return self.classify(self.pool(levels), sentence)


class TextPromptDecoder(nn.Module):
    """Image embedding (B, C, g, g) [+ first-stage features] + word states + sentence -> mask logits."""

    def __init__(self, config: DecoderConfig = DecoderConfig()) -> None:
        super().__init__()
        c = self.config = config
        if c.enhance and not c.alignment:
            raise ValueError("enhance (TMCA target enhancement) needs alignment")
        d = c.embed_dim
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=d, mlp_dim=2048, num_heads=8),
            transformer_dim=d,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self.pe_layer = PositionEmbeddingRandom(d // 2)
        self._inference_pe: tuple | None = None
        self.dense_embed = nn.Parameter(torch.zeros(d))
        self.sentence_proj = nn.Sequential(nn.Linear(c.text_dim, d), nn.GELU(), nn.Linear(d, c.sentence_tokens * d))
        if c.word_tokens:
            self.word_proj = nn.Sequential(nn.LayerNorm(c.text_dim), nn.Linear(c.text_dim, d))
        up_dim = d // 8  # SAM's upscaled mask features
        if c.low_level_dim:
            self.low_adapter = nn.Sequential(
                nn.Conv2d(c.low_level_dim, 64, 1), LayerNorm2d(64), nn.GELU(), _zero_(nn.Conv2d(64, d, 1))
            )
        if c.alignment:
            a = c.align_dim
            levels = {"high": d, "mask": up_dim} | ({"low": c.low_level_dim} if c.low_level_dim else {})
            self.align_image = nn.ModuleDict({k: nn.Conv2d(ch, a, 1) for k, ch in levels.items()})
            self.align_text = nn.ModuleDict({k: nn.Linear(c.text_dim, a) for k in levels})
            self.align_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if c.enhance:
            self.enhance_scale = nn.Parameter(torch.tensor(10.0))
            self.enhance_bias = nn.Parameter(torch.tensor(-5.0))
            self.enhance_gain = nn.Parameter(torch.zeros(d))
            self.enhance_dense = nn.Parameter(torch.zeros(d))
        if c.interaction:
            if not c.word_tokens:
                raise ValueError("interaction (RecLMIS) needs word tokens")
            self.attn_words = nn.MultiheadAttention(d, c.heads, batch_first=True)
            self.attn_patches = nn.MultiheadAttention(d, c.heads, batch_first=True)
            self.norm_words, self.norm_patches = nn.LayerNorm(d), nn.LayerNorm(d)
            self.word_score = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
            self.patch_score = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
            self.patch_dense = _zero_(nn.Conv2d(d, d, 1))
            self.word_update = _zero_(nn.Linear(d, d))
            self.image_reconstructor = Reconstructor(d, d, 4)
            self.text_reconstructor = Reconstructor(d, c.text_dim, 4)
            self.contrast_image = nn.Linear(d, d)
            self.contrast_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if c.presence:  # created last: the other modules' initial weights stay those of a run without it
            self.presence_head = PresenceHead(d + c.low_level_dim, c.text_dim)

    # -- initialisation from a SAM-family segmenter --------------------------------------------------------------
    @torch.no_grad()
    def init_from_segmenter(self, segmenter) -> None:
        """Copy the segmenter's mask decoder, positional encoding and no-mask embedding; start the sentence tokens
        at its embedding of a whole-image box."""
        self.mask_decoder.load_state_dict(segmenter.mask_decoder.state_dict())
        pe = segmenter.prompt_encoder
        self.pe_layer.load_state_dict(pe.pe_layer.state_dict())
        self.dense_embed.copy_(pe.no_mask_embed.weight[0])
        size = float(segmenter.input_size)
        box = torch.tensor([[0.0, 0.0, size - 1, size - 1]], device=pe.no_mask_embed.weight.device)
        corners = pe._embed_boxes(box)[0].to(self.dense_embed.device)  # (2, d): top-left, bottom-right
        last = self.sentence_proj[-1]
        last.weight.mul_(0.1)  # text moves the tokens away from the box gently
        n = self.config.sentence_tokens
        last.bias.copy_(corners.repeat(math.ceil(n / 2), 1)[:n].reshape(-1))

    # -- forward -------------------------------------------------------------------------------------------------
    def image_pe(self) -> torch.Tensor:
        g = self.config.grid
        if torch.is_grad_enabled():
            return self.pe_layer((g, g)).unsqueeze(0)
        # a constant of the (frozen) random projection: computed once for inference, again if it is reloaded
        gaussian = self.pe_layer.positional_encoding_gaussian_matrix
        key = (gaussian.data_ptr(), gaussian._version)
        if self._inference_pe is None or self._inference_pe[0] != key:
            self._inference_pe = (key, self.pe_layer((g, g)).unsqueeze(0))
        return self._inference_pe[1]

    def _low_tokens(self, low: torch.Tensor) -> torch.Tensor:
        """``low_adapter`` on token-major features (inference path): (B, C_low, g, g) -> (B, g g, C)."""
        conv1, norm, _, conv2 = self.low_adapter
        x = F.linear(_token_major(low), conv1.weight.flatten(1), conv1.bias)
        x = F.gelu(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        return linear(x, conv2.weight.flatten(1), conv2.bias)

    def text_similarity(self, level: str, image: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """(B, h, w) cosine similarity of each pixel of an image level with the sentence in the aligned space."""
        pix = F.normalize(self.align_image[level](image), dim=1)
        txt = F.normalize(self.align_text[level](sentence), dim=-1)
        return torch.einsum("bchw,bc->bhw", pix, txt)

    def forward(
        self,
        features: torch.Tensor,
        low: torch.Tensor | None,
        words: torch.Tensor,
        word_mask: torch.Tensor,
        sentence: torch.Tensor,
        *,
        return_features: bool = False,
    ) -> DecoderOutput:
        """features (B, C, g, g), low (B, C_low, g, g) or None, words (B, T, text_dim), word_mask (B, T) bool,
        sentence (B, text_dim) -> logits (B, 1, 4g, 4g)."""
        c = self.config
        b, d, g = features.shape[0], c.embed_dim, c.grid
        if self.config.low_level_dim and low is None:
            raise ValueError("this decoder fuses first-stage features: give `low`")
        image_levels = [features] + ([low] if c.low_level_dim else [])  # before any text-guided enhancement
        pe = self.image_pe()
        dense = self.dense_embed.view(1, d, 1, 1).expand(b, d, g, g)
        out = DecoderOutput(logits=features.new_empty(0))
        sparse = self.sentence_proj(sentence).view(b, c.sentence_tokens, d)
        tokens = None
        if c.word_tokens:
            tokens = out.word_tokens = self.word_proj(words) * word_mask.unsqueeze(-1)
        if c.interaction:
            tokens, dense_patches = self._interact(features, pe, tokens, word_mask, out)
            dense = dense + dense_patches
        if c.enhance:
            sims = [self.text_similarity("high", features, sentence)]
            if c.low_level_dim:
                sims.append(self.text_similarity("low", low, sentence))
            gate = torch.sigmoid(self.enhance_scale * torch.stack(sims).mean(0) + self.enhance_bias).unsqueeze(1)
            features = features + self.enhance_gain.view(1, d, 1, 1) * gate * features
            dense = dense + self.enhance_dense.view(1, d, 1, 1) * gate
        # inference: SAM's decoder through sam_decoder_fast (same maths, folded projections, fused CPU kernels)
        fast = not torch.is_grad_enabled() and not return_features and sam_decoder_fast.supports(self.mask_decoder)
        low_tokens = None
        if c.low_level_dim:
            low_tokens = self._low_tokens(low) if fast else self.low_adapter(low)
        logits, mask_features = [], []
        for i in range(b):  # one image at a time: word counts differ and SAM's transformer has no padding mask
            prompt = sparse[i : i + 1]
            if tokens is not None:
                prompt = torch.cat([prompt, tokens[i : i + 1, word_mask[i]]], dim=1)
            lo, up = self._decode(features[i : i + 1], dense[i : i + 1], pe, prompt, low_tokens, i, fast)
            logits.append(lo)
            if return_features:
                mask_features.append(up)
        out.logits = out.mask_logits = torch.cat(logits)
        if return_features:
            out.mask_features = torch.cat(mask_features)
        if c.presence:
            out.presence_logits = self.presence_head(image_levels, sentence)
            out.logits = gate_by_presence(out.mask_logits, out.presence_logits)
        return out

    def _decode(
        self, features, dense, pe, prompt, low_tokens, i, fast: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (1, 1, 4g, 4g), upscaled features (None on the fast path))."""
        md = self.mask_decoder
        output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight]).unsqueeze(0)
        tokens = torch.cat([output_tokens, prompt], dim=1)
        g = self.config.grid
        if fast:
            keys = _token_major(features + dense)
            hs, keys = sam_decoder_fast.two_way_transformer(md.transformer, keys, _token_major(pe), tokens, None)
            if low_tokens is not None:
                keys = keys + low_tokens[i : i + 1]
            hyper = md.output_hypernetworks_mlps[0](hs[:, 1])
            return sam_decoder_fast.upscaled_masks(md, keys, hyper[:, None], g, g), None
        hs, src = md.transformer(features + dense, pe, tokens)
        src = src.transpose(1, 2).reshape(1, -1, g, g)
        if low_tokens is not None:
            src = src + low_tokens[i : i + 1]
        up = md.output_upscaling(src)
        hyper = md.output_hypernetworks_mlps[0](hs[:, 1])  # SAM's single-mask output token
        logits = torch.bmm(hyper.unsqueeze(1), up.flatten(2)).view(1, 1, *up.shape[-2:])
        return logits, up

    def _interact(self, features, pe, tokens, word_mask, out: DecoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """RecLMIS conditioned interaction: words attend to patches, patches to the conditioned words."""
        c = self.config
        k = c.grid // c.interaction_grid
        patches = F.avg_pool2d(features, k).flatten(2).transpose(1, 2)  # (B, N, C)
        patch_pe = F.avg_pool2d(pe, k).flatten(2).transpose(1, 2)
        update = self.attn_words(tokens, patches + patch_pe, patches, need_weights=False)[0]
        words = self.norm_words(tokens + update)
        cond = self.attn_patches(patches + patch_pe, words, words, key_padding_mask=~word_mask, need_weights=False)[0]
        patches = self.norm_patches(patches + cond)
        out.conditioned_words, out.conditioned_patches = words, patches
        out.word_logits = self.word_score(words).squeeze(-1).masked_fill(~word_mask, float("-inf"))
        out.patch_logits = self.patch_score(patches).squeeze(-1)
        grid = patches.transpose(1, 2).reshape(-1, c.embed_dim, c.interaction_grid, c.interaction_grid)
        dense = F.interpolate(self.patch_dense(grid), size=(c.grid, c.grid), mode="bilinear", align_corners=False)
        # the prompt tokens move from the plain word tokens by a zero-initialised step (the SAM decoder was trained
        # on tokens of another scale than the normalised conditioned words)
        return (tokens + self.word_update(update)) * word_mask.unsqueeze(-1), dense


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> contiguous (B, h w, C)."""
    return x.flatten(2).transpose(1, 2).contiguous()


def gate_by_presence(logits: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
    """(B, 1, s, s) mask logits capped at the (B,) presence logit where it is negative (target absent)."""
    cap = presence.view(-1, 1, 1, 1)
    return torch.where(cap < 0, torch.minimum(logits, cap), logits)
