"""One implementation of :class:`~.protocols.PromptableSegmenter` for every SAM-shaped model.

SAM ViT-B/L/H, MobileSAM (TinyViT at 1024 px) and LiteMedSAM (TinyViT at 256 px) share the prompt encoder and mask
decoder; they differ only in the image encoder, the input size and the pixel normalisation, which the backend
adapters (:mod:`.litemedsam`, :mod:`.sam`) supply.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import NothingFoundError, PromptsegError
from . import embedding_cache, sam_decoder_fast
from .cache import EmbeddingCache, content_key
from .checkpoint import load_state_dict
from .device import PRECISION_ENV, check_precision
from .preprocessing import Normalization, ResizeTransform, as_channels_last, check_unit_range, in_memory
from .protocols import Embedding, Prediction

#: Prompts decoded per forward pass on CPU. Every prompt carries ~30 MB of (4096, 256) image tokens and upsampled
#: maps; beyond 2-4 prompts a chunk no longer fits in cache and its element-wise passes stream from memory, so
#: bigger batches are slower per prompt than one-by-one (benchmarks/bench_segmenter.py sweeps the chunk size).
DECODE_CHUNK = 2
#: on GPUs, where bandwidth is plentiful and every kernel launch costs, decode in big chunks
DECODE_CHUNK_ACCELERATOR = 32


#: CPU flags (``/proc/cpuinfo``) of hardware bfloat16 matrix products: AMX tiles (Intel Xeons since Sapphire Rapids)
#: and AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake). Without either, bfloat16 is converted in
#: software and slower than float32.
NATIVE_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
#: torch's probes for the same two kinds
_TORCH_BFLOAT16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX tiles or AVX512-BF16): torch's own probes,
    else the kernel's CPU flags."""
    probes = [getattr(getattr(torch, "cpu", None), name, None) for name in _TORCH_BFLOAT16_PROBES]
    if all(probe is not None for probe in probes):
        try:
            return any(bool(probe()) for probe in probes)
        except Exception:  # private probes: fall through to the flags
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


#: what auto means in this context when a method needs it pinned (see :func:`auto_precision`)
_AUTO_PRECISION: contextvars.ContextVar[str | None] = contextvars.ContextVar("promptseg_auto_precision", default=None)


@contextlib.contextmanager
def auto_precision(precision: str) -> Iterator[None]:
    """Within the block (this thread), auto means ``precision``; a precision the user set explicitly still wins.
    For methods whose decisions hang on differences smaller than bfloat16's rounding of the embedding."""
    token = _AUTO_PRECISION.set(check_precision(precision))
    try:
        yield
    finally:
        _AUTO_PRECISION.reset(token)


def resolve_precision(setting: str | None, device: torch.device | str = "cpu") -> str:
    """The concrete mode (float32 or bfloat16) of a setting (None: ``$PROMPTSEG_PRECISION``, else auto)."""
    if setting is None:
        setting = check_precision(os.environ.get(PRECISION_ENV) or "auto", f"${PRECISION_ENV}")
    if setting == "auto":
        setting = _AUTO_PRECISION.get() or "auto"
    if setting != "auto":
        return setting
    return "bfloat16" if torch.device(device).type == "cpu" and cpu_has_native_bfloat16() else "float32"


class SamFamilySegmenter:
    """Image encoder + SAM prompt encoder + SAM mask decoder, with SAM's resize/pad conventions."""

    def __init__(
        self,
        name: str,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        *,
        input_size: int,
        pixel_mean: tuple[float, float, float] | None,
        pixel_std: tuple[float, float, float] | None,
        points_reliable: bool,
        device: torch.device,
        cache: EmbeddingCache | None = None,
        fast: bool = True,
        precision: str | None = None,
    ) -> None:
        """``fast``: use the optimised encoder (TinyViT) and decoder, equal to the reference modules up to float
        rounding (tests/test_fast_paths.py); ``False`` runs the reference modules as published. ``precision``: the
        image encoder's (:data:`.device.PRECISIONS`); None follows ``$PROMPTSEG_PRECISION`` (default auto)."""
        self.name = name
        self.input_size = input_size
        self.points_reliable = points_reliable
        self.device = device
        self.image_encoder = image_encoder.eval().to(device)
        # the encoder's tensors listed once: reading their versions costs ~30 us, walking the modules for them ~2 ms,
        # and every prompt asks (feature_name is part of the embedding's key)
        self._encoder_tensors = [*self.image_encoder.parameters(), *self.image_encoder.buffers()]
        self.prompt_encoder = prompt_encoder.eval().to(device)
        self.mask_decoder = mask_decoder.eval().to(device)
        # SAM normalises 0-255 pixels by ImageNet statistics; LiteMedSAM takes [0, 1] input (mean/std None)
        self._mean = None if pixel_mean is None else torch.tensor(pixel_mean).view(1, 3, 1, 1) / 255.0
        self._std = None if pixel_std is None else torch.tensor(pixel_std).view(1, 3, 1, 1) / 255.0
        self.cache = cache if cache is not None else EmbeddingCache()
        self._fast_encoder: nn.Module | None = None  # a snapshot of image_encoder's weights, see _encoder()
        self._fast_encoder_versions: tuple[int, ...] = ()
        self._context: tuple | None = None  # (features, weight versions, sam_decoder_fast.ImageContext)
        self._dense_pe: tuple | None = None  # (prompt encoder weight versions, its dense positional encoding)
        self._fingerprint: tuple[tuple[int, ...], str] | None = None  # (encoder weight versions, fingerprint)
        self._decoder_fingerprint: tuple[tuple[int, ...], str] | None = None  # the same for the decoder
        self._offered_to_disk: set[tuple[Path, str]] = set()  # (disk cache root, key) of memory hits written there
        self.fast = fast
        self.precision = precision
        self._encoder()  # build the fast encoder now, not on the first (interactive) embed
        self.embedding_signature()  # and the weights fingerprints of the disk cache's signatures
        self.context_signature()
        self._warm_up_decoder()

    @classmethod
    def from_checkpoint(
        cls,
        name: str,
        weights: Path,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        **options: Any,
    ) -> SamFamilySegmenter:
        """Load a checkpoint in SAM's key layout (image_encoder.*, prompt_encoder.*, mask_decoder.*) and wrap it."""
        modules = nn.ModuleDict(
            {"image_encoder": image_encoder, "prompt_encoder": prompt_encoder, "mask_decoder": mask_decoder}
        )
        load_state_dict(modules, weights, name)
        return cls(name, image_encoder, prompt_encoder, mask_decoder, **options)

    @property
    def fast(self) -> bool:
        return self._fast

    @fast.setter
    def fast(self, value: bool) -> None:
        self._fast = bool(value)
        self._fast_decoder = self._fast and sam_decoder_fast.supports(self.mask_decoder)

    @property
    def precision(self) -> str:
        """The image encoder's numeric mode, float32 or bfloat16: the one set, else ``$PROMPTSEG_PRECISION``, else
        auto (bfloat16 on a CPU with native bfloat16: AMX or AVX512-BF16)."""
        return resolve_precision(self._precision, self.device)

    @precision.setter
    def precision(self, value: str | None) -> None:
        self._precision = None if value is None else check_precision(value)

    @property
    def feature_name(self) -> str:
        """What cache keys call this model's features: its name and the fingerprint of its encoder's weights, marked
        when the encoder runs in bfloat16. The weights are part of it because users load fine-tuned checkpoints under
        the bundled model's name: with the name alone, both wrote one disk-cache entry, each refusing and replacing the
        other's at every image, and a training feature cache (keyed by this too) served one's features to the other."""
        precision = self.precision
        # weights updated in place (training steps, load_state_dict) are seen; a parameter replaced by a new object
        # is not, here (the disk cache's signature walks the modules and refuses the entry)
        name = f"{self.name}@{self.encoder_fingerprint(tuple(t._version for t in self._encoder_tensors))}"
        return name if precision == "float32" else f"{name}+{precision}"

    def encoder_fingerprint(self, versions: tuple[int, ...] | None = None) -> str:
        """:func:`weights_fingerprint` of the image encoder, recomputed only when its weights changed (``versions``:
        of its tensors, when the caller has them)."""
        versions = _weight_versions(self.image_encoder) if versions is None else versions
        if self._fingerprint is None or self._fingerprint[0] != versions:
            self._fingerprint = (versions, weights_fingerprint(self.image_encoder))
        return self._fingerprint[1]

    def encoder_autocast(self) -> contextlib.AbstractContextManager:
        """The context to run the image encoder in (its output is then cast back to float32 by the caller)."""
        if self.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _encoder(self) -> nn.Module:
        """What computes the features: the fast TinyViT (rebuilt after the weights changed) or the original."""
        if not self._fast or type(self.image_encoder).__name__ != "TinyViT":
            return self.image_encoder
        versions = _weight_versions(self.image_encoder)
        if self._fast_encoder is None or self._fast_encoder_versions != versions:
            from .tinyvit_fast import FastTinyViT

            self._fast_encoder = FastTinyViT(self.image_encoder).to(self.device)
            self._fast_encoder_versions = versions
        return self._fast_encoder

    def _image_context(
        self, features: torch.Tensor, projections: torch.Tensor | None = None
    ) -> sam_decoder_fast.ImageContext:
        """The decoder's prompt-independent work on these features, kept for the next prompt on the same image;
        ``projections``: its costly part read from the disk cache with the features."""
        versions = _weight_versions(self.prompt_encoder, self.mask_decoder)
        cached = self._context
        if projections is None and cached is not None and cached[0] is features and cached[1] == versions:
            return cached[2]
        context = sam_decoder_fast.image_context(
            self.mask_decoder,
            features,
            self._positional_encoding(),
            self.prompt_encoder.no_mask_embed.weight,
            projections,
        )
        self._context = (features, versions, context)
        return context

    def _positional_encoding(self) -> torch.Tensor:
        """The prompt encoder's dense positional encoding (1, C, h, w): the same for every image, computed once."""
        versions = _weight_versions(self.prompt_encoder)
        if self._dense_pe is None or self._dense_pe[0] != versions:
            self._dense_pe = (versions, self.prompt_encoder.get_dense_pe())
        return self._dense_pe[1]

    def _warm_up_decoder(self) -> None:
        """Two decodes on zero features at load: the first real prompt (a disk-cache hit in a new process, the
        widget's first click) then runs at steady speed instead of paying for kernel set-up and first allocations.
        The first decode's ~30 MB of buffers come from fresh pages and go back to the OS when freed; the second
        runs on memory the allocator then keeps (measured: ~7000 page faults, 10-30 ms, less on the first mask)."""
        size = self.input_size
        grid = tuple(self.prompt_encoder.image_embedding_size)
        features = torch.zeros((1, self.prompt_encoder.embed_dim, *grid), device=self.device)
        embedding = Embedding(features, ResizeTransform((size, size), size), self.name, "warm-up")
        for _ in range(2):
            self.predict(embedding, boxes=np.array([[0.0, 0.0, size / 2, size / 2]])).masks()
        self._context = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, input_size={self.input_size}, device={self.device})"

    # -- encoder ---------------------------------------------------------------------------------------------
    def preprocess(
        self, image_hwc: np.ndarray, normalize: Normalization = "auto"
    ) -> tuple[torch.Tensor, ResizeTransform]:
        transform = ResizeTransform(image_hwc.shape[:2], self.input_size)
        if normalize == "auto" and self._mean is not None and image_hwc.dtype == np.uint8:
            normalize = "none"  # SAM was trained on raw 0-255 pixels (ImageNet statistics), not min-max stretched
        x = transform.image_to_input(image_hwc, normalize)
        if self._mean is not None:
            # the padding must stay zero *after* normalisation, as in SAM's own preprocess
            nh, nw = transform.resized_shape
            x[..., :nh, :nw] = (x[..., :nh, :nw] - self._mean) / self._std
        return x, transform

    @torch.inference_mode()
    def embed(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> Embedding:
        arr = in_memory(as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name), name)
        self.check_enough_pixels(arr.shape[:2], name)
        check_unit_range(arr, normalize, name)
        key = content_key(arr, self.feature_name, normalize)

        computed = False

        def compute() -> Embedding:
            nonlocal computed
            computed = True
            disk = embedding_cache.active()  # under the in-memory cache: what another process computed
            if disk is not None:
                signature = self.embedding_signature(normalize)
                # with the fast decoder, its per-image context is stored with the features: the first prompt on
                # a cached image in a new process then decodes as fast as the next ones
                context_signature = self.context_signature() if self._fast_decoder else None
                found = disk.load_with_context(key, signature, context_signature, self.device)
                if found is not None:
                    embedding, projections = found
                    if projections is not None:
                        self._image_context(embedding.features, projections)
                    return embedding
            x, transform = self.preprocess(arr, normalize)
            with self.encoder_autocast():
                features = self._encoder()(x.to(self.device)).float()
            embedding = Embedding(features=features, transform=transform, model_name=self.name, key=key)
            if disk is not None:
                context = self._image_context(features).projections() if self._fast_decoder else None
                disk.store(embedding, signature, context, context_signature)
            return embedding

        embedding = self.cache.get_or_compute(key, compute)
        if not computed:
            self._offer_to_disk(embedding, normalize)
        return embedding

    def check_enough_pixels(self, shape: tuple[int, int], name: str) -> None:
        """An image must have at least as many pixels along its longest side as the encoder's feature grid has
        cells (64 for LiteMedSAM, SAM and MobileSAM). A smaller one is enlarged to fill the input (an 8 px image
        32x at 256 px), each of its pixels spans several feature cells, and the decoder takes the interpolated
        blobs for objects with full confidence (noise came back as 'objects' of score 1.0): no object then, and why
        (:class:`NothingFoundError`: a batch records the input as empty with this reason)."""
        grid = int(max(self.prompt_encoder.image_embedding_size))
        h, w = int(shape[0]), int(shape[1])
        if max(h, w) >= grid:
            return
        enlarged = self.input_size / max(h, w, 1)
        raise NothingFoundError(
            f"{name}: {w} x {h} px, smaller than the {grid} px along its longest side that {self.name} needs: "
            f"enlarged {enlarged:.0f}x to its {self.input_size} px input, each pixel would span "
            f"{enlarged * grid / self.input_size:.0f} of its feature cells and the blurred pixels would pass for "
            "objects; nothing segmented (give the image at its full size)"
        )

    def _offer_to_disk(self, embedding: Embedding, normalize: Normalization) -> None:
        """An embedding the memory answered, written to the disk cache when that lacks it: computed in this process
        before the disk cache was set (a napari session, a script, `promptseg embed` run from the console), it was
        never written, and `embed` said "no embedding was kept". Once per cache and key: a read-only cache or a cap
        smaller than an entry is not written again at every prompt."""
        disk = embedding_cache.active()
        if disk is None or (disk.root, embedding.key) in self._offered_to_disk:
            return
        self._offered_to_disk.add((disk.root, embedding.key))  # before the look: no file check at every prompt
        if embedding.key in disk:
            return
        context_signature = self.context_signature() if self._fast_decoder else None
        context = self._image_context(embedding.features).projections() if self._fast_decoder else None
        disk.store(embedding, self.embedding_signature(normalize), context, context_signature)

    def embedding_signature(self, normalize: Normalization = "auto") -> dict:
        """What makes this model's features what they are, beyond the image: a disk-cache entry whose signature
        differs (other weights under the same name, another encoder variant) is refused."""
        encoder = type(self.image_encoder).__name__
        return {
            "model": self.name,
            "encoder_weights": self.encoder_fingerprint(),
            "encoder": f"{encoder} (fast)" if self._fast and encoder == "TinyViT" else encoder,
            "input_size": self.input_size,
            "pixel_mean": None if self._mean is None else self._mean.flatten().tolist(),
            "pixel_std": None if self._std is None else self._std.flatten().tolist(),
            "normalize": normalize,
            # float32 entries keep the signature they had before precisions existed (users' caches stay valid)
            **({} if self.precision == "float32" else {"precision": self.precision}),
        }

    def context_signature(self) -> dict:
        """What makes the decoder's per-image context (stored with the features) what it is, beyond the features:
        a context whose signature differs (a fine-tuned decoder under the same name) is refused."""
        versions = _weight_versions(self.prompt_encoder, self.mask_decoder)
        if self._decoder_fingerprint is None or self._decoder_fingerprint[0] != versions:
            fingerprint = weights_fingerprint(nn.ModuleList([self.prompt_encoder, self.mask_decoder]))
            self._decoder_fingerprint = (versions, fingerprint)
        return {
            "model": self.name,
            "decoder_weights": self._decoder_fingerprint[1],
            "context": "sam_decoder_fast first block k, v, q projections (3, HW, Ci)",
        }

    # -- decoder ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(
        self,
        embedding: Embedding,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
        local: bool = False,
    ) -> Prediction:
        """Decode N prompts. boxes (N, 4) x0, y0, x1, y1; points (N, P, 2) x, y with labels (N, P) 1/0.

        Coordinates are pixels of the original image (x = column, y = row). Box i and points i form prompt i.
        ``local``: decode each box from a window of image tokens around it (:func:`sam_decoder_fast.decode`),
        many times faster for boxes that are small for the image; boxes only, no mask prompts; each mask is
        computed within its box grown by half its extent (:func:`sam_decoder_fast.mask_regions`) and is background
        elsewhere. Ignored where the fast decoder does not apply.
        """
        if embedding.model_name != self.name:
            raise PromptsegError(f"embedding was computed by {embedding.model_name!r}, not by {self.name!r}")
        transform = embedding.transform
        n = _prompt_count(boxes, points, point_labels, mask_input)
        box_t = pts_t = lab_t = None
        if boxes is not None:
            box_t = torch.from_numpy(transform.boxes_to_input(boxes)).to(self.device)
        if points is not None:
            pts_t = torch.from_numpy(transform.coords_to_input(points)).to(self.device)
            lab_t = torch.as_tensor(np.asarray(point_labels), dtype=torch.int64, device=self.device)
        logits, scores = [], []
        features = embedding.features
        # fast path without a mask prompt: the image side (incl. positional encoding) comes from the cached context
        context = self._image_context(features) if self._fast_decoder and mask_input is None else None
        pe = None if context is not None else self._positional_encoding()
        chunk = DECODE_CHUNK if self.device.type == "cpu" else DECODE_CHUNK_ACCELERATOR
        windows = None
        if local and context is not None and box_t is not None and points is None:
            grid = features.shape[-1]
            origins, side = sam_decoder_fast.window_origins(box_t, grid, transform.input_size / grid)
            if side < grid:
                windows = (origins, side)
                regions = sam_decoder_fast.mask_regions(box_t, grid, transform.input_size / grid)
                # a prompt's tokens shrink with its window: as many fit in cache per chunk
                chunk = max(chunk, min(32, chunk * (grid * grid) // (side * side)))
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            sparse, dense = self.prompt_encoder(
                points=None if pts_t is None else (pts_t[sl], lab_t[sl]),
                boxes=None if box_t is None else box_t[sl],
                masks=None if mask_input is None else mask_input[sl].to(self.device),
            )
            if self._fast_decoder:
                # without a mask prompt the dense embedding is one learned vector: the image side is the context
                low, iou = sam_decoder_fast.decode(
                    self.mask_decoder,
                    features,
                    pe,
                    sparse,
                    None if context is not None else dense,
                    multimask,
                    context,
                    None if windows is None else (windows[0][sl], windows[1]),
                    None if windows is None else regions[sl],
                )
            else:
                low, iou = self.mask_decoder(
                    image_embeddings=features,
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
            logits.append(low.float().cpu())
            scores.append(iou.float().cpu())
        return Prediction(low_res_logits=torch.cat(logits), scores=torch.cat(scores).numpy(), transform=transform)


def weights_fingerprint(module: nn.Module, samples: int = 1024) -> str:
    """``<parameter count>:<hash>`` of a module's weights: names, shapes, dtypes and an even sample of at most
    ``samples`` values per tensor (fine-tuning changes nearly every value; hashing all of ViT-H would take seconds)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    count = 0
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        count += flat.numel()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        sample = flat[:: max(1, flat.numel() // samples)].to("cpu", torch.float64).numpy()
        digest.update(sample.tobytes())
    return f"{count}:{digest.hexdigest()}"


def _weight_versions(*modules: nn.Module) -> tuple[int, ...]:
    """Version counters of all weights: an in-place update (training step, load_state_dict) bumps them, so
    tensors derived from the weights (fast encoder, decoder image context) know when to be recomputed."""
    return tuple(t._version for m in modules for t in (*m.parameters(), *m.buffers()))


def _prompt_count(boxes, points, point_labels, mask_input) -> int:
    counts = {}
    if boxes is not None:
        boxes = np.asarray(boxes)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise PromptsegError(f"boxes must have shape (N, 4) as x0, y0, x1, y1; got {boxes.shape}")
        counts["boxes"] = len(boxes)
    if points is not None:
        points = np.asarray(points)
        if point_labels is None:
            raise PromptsegError("points given without point_labels (1 = positive, 0 = negative)")
        labels = np.asarray(point_labels)
        if points.ndim != 3 or points.shape[2] != 2 or labels.shape != points.shape[:2]:
            raise PromptsegError(
                f"points must be (N, P, 2) with labels (N, P); got points {points.shape}, labels {labels.shape}"
            )
        counts["points"] = len(points)
    if mask_input is not None:
        counts["mask_input"] = int(mask_input.shape[0])
    if not counts:
        raise PromptsegError("no prompt: give at least one box or point")
    if len(set(counts.values())) != 1:
        raise PromptsegError(f"prompt batch sizes differ: {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise PromptsegError("no prompt: give at least one box or point")
    return n
