"""Image metrics of the LDM3D paper (Tables 1 and 3): FID, Inception Score, CLIP similarity and the autoencoder's rFID.

    from ldm3d.evaluation.image_metrics import load_clip, frechet_distance, inception_score, reconstruct
    clip = load_clip("openai/clip-vit-large-patch14")        # or a local folder in the hub layout
    clip.score(rgb_u8, "a cabin in the woods")                 # 100 · max(cos(image, text), 0)
    frechet_distance(real_images, fake_images)                 # InceptionV3 pool3 features (torch-fidelity)
    inception_score(fake_images)                               # (mean, std) over 10 splits
    frechet_distance(inputs, [reconstruct(pipe.autoencoder, rgb, depth)[0] for rgb, depth in pairs])  # rFID

The computations are torchmetrics' (``FrechetInceptionDistance``, ``InceptionScore``, ``CLIPScore``); nothing here
re-derives them. What this module adds:

* **Feature extractors are injectable.** ``features=None`` means the standard one: torchmetrics' InceptionV3
  (torch-fidelity's ``inception-v3-compat`` port of the TF FID network, pool3 2048-d for FID, the unbiased 1008-class
  logits for IS). torch-fidelity imports torchvision, which must match torch; when either is missing or broken,
  :func:`standard_features` raises :class:`FailedPrecondition` naming what to install (the report then records the
  metric as null with that reason). Any ``torch.nn.Module`` mapping ``uint8 [N, 3, H, W]`` to ``float [N, D]`` can
  stand in (:class:`FeatureExtractor`); tests use :func:`tiny_feature_extractor`, a seeded random conv net, so that
  they run torchmetrics' real FID/IS computation. Every number is reported with the extractor's ``name``.
* **CLIP through transformers 5.** torchmetrics 1.9's ``CLIPScore`` expects ``get_image_features`` to return a
  tensor; transformers 5 returns a ``BaseModelOutputWithPooling`` (whose ``pooler_output`` is the projected
  embedding). :class:`_ClipFeatures` adapts the model, and the processor is built with the PIL-backend image
  processor (no torchvision).

Images everywhere are RGB ``uint8 [H, W, 3]`` numpy arrays (what the pipeline and ``ldm3d.codec.read_rgb`` return).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import codec
from ..errors import FailedPrecondition, InvalidArgument, NotFound

#: The paper's CLIP (Stable Diffusion v1's text encoder is this model's text tower).
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"

#: What the report says produced FID / IS when the standard extractor is used.
INCEPTION_FID = (
    "InceptionV3 pool3, 2048-d (torch-fidelity inception-v3-compat, pt_inception-2015-12-05, via torchmetrics)"
)
INCEPTION_IS = "InceptionV3 logits_unbiased, 1008 classes (torch-fidelity inception-v3-compat, via torchmetrics)"

#: Inception Score splits: the convention of Salimans et al. and of the published numbers.
IS_SPLITS = 10

_INSTALL_HINT = (
    "pip install torch-fidelity plus a torchvision built for this torch ({torch}, same CPU/CUDA variant: PyPI's "
    "torchvision is built for CUDA torch and fails on a CPU one with 'torchvision::nms does not exist'); the "
    "weights (pt_inception-2015-12-05-6726825d.pth) download from GitHub on first use, offline copy them to "
    "$TORCH_HOME/hub/checkpoints/"
)


@dataclass
class FeatureExtractor:
    """A network for FID / IS: ``uint8 [N, 3, H, W]`` → ``float [N, D]`` (features for FID, class logits for IS)."""

    name: str  # recorded in reports beside every number it produced
    module: object  # torch.nn.Module, or an int / str naming torchmetrics' own InceptionV3 output


def standard_features(kind: str) -> FeatureExtractor:
    """torchmetrics' InceptionV3 for ``kind`` "fid" (pool3, 2048) or "is" (logits). Raises
    :class:`FailedPrecondition` when torch-fidelity, torchvision or the Inception weights are unavailable."""
    if kind not in ("fid", "is"):
        raise InvalidArgument(f"kind={kind!r}: use 'fid' or 'is'", field="kind")
    extractor = (
        FeatureExtractor(INCEPTION_FID, 2048) if kind == "fid" else FeatureExtractor(INCEPTION_IS, "logits_unbiased")
    )
    _fid_metric(extractor) if kind == "fid" else _is_metric(extractor)  # fails here, before any generation
    return extractor


# --------------------------------------------------------------------------------------------- FID / IS / rFID
def frechet_distance(
    real: Iterable[np.ndarray], fake: Iterable[np.ndarray], features: FeatureExtractor | None = None,
    batch_size: int = 16,
) -> float:  # fmt: skip
    """torchmetrics' ``FrechetInceptionDistance`` between two image sets (each at least 2 images; any sizes, the
    standard extractor resizes to 299² itself). ``features=None``: the standard InceptionV3 (see module doc)."""
    metric = _fid_metric(features or FeatureExtractor(INCEPTION_FID, 2048))
    counts = {}
    with torch.inference_mode():
        for real_flag, images in ((True, real), (False, fake)):
            counts[real_flag] = 0
            for batch in _batches(images, batch_size):
                metric.update(batch, real=real_flag)
                counts[real_flag] += len(batch)
    if min(counts.values()) < 2:
        raise InvalidArgument(
            f"FID needs at least 2 images on each side; got {counts[True]} real and {counts[False]} generated",
            field="images",
        )
    return float(metric.compute())


def inception_score(
    images: Iterable[np.ndarray], features: FeatureExtractor | None = None, splits: int = IS_SPLITS, seed: int = 0,
    batch_size: int = 16,
) -> tuple[float, float | None]:  # fmt: skip
    """torchmetrics' ``InceptionScore``: ``(mean, std)`` of ``exp(E KL(p(y|x) ‖ p(y)))`` over ``splits`` groups
    (``std`` is None for one split).

    torchmetrics shuffles the images before splitting with torch's global generator; we fork it and seed it with
    ``seed`` so that a report is reproducible and the caller's random state is left alone."""
    metric = _is_metric(features or FeatureExtractor(INCEPTION_IS, "logits_unbiased"), splits)
    n = 0
    with torch.inference_mode():
        for batch in _batches(images, batch_size):
            metric.update(batch)
            n += len(batch)
        if n < 2:
            raise InvalidArgument(f"the Inception Score needs at least 2 images; got {n}", field="images")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the std of a single split
            torch.manual_seed(seed)
            mean, std = metric.compute()
    return float(mean), (float(std) if splits > 1 else None)


def reconstruct(autoencoder, rgb: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One autoencoder round trip for rFID: RGB ``uint8 [H, W, 3]`` + depth ``uint16 [H, W]`` → encoder (posterior
    mean) → decoder → the same formats, decoded exactly as a generation is (``ldm3d.codec.decode_rgbd``)."""
    latents = autoencoder.encode(rgb, depth)
    _, rgb_u8, depth_u16 = codec.decode_rgbd(autoencoder.decode(latents))
    return rgb_u8[0], depth_u16[0]


def _fid_metric(features: FeatureExtractor):
    def build():
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=features.module, normalize=False)

    return _build(build, features, "FID")


def _is_metric(features: FeatureExtractor, splits: int = IS_SPLITS):
    def build():
        from torchmetrics.image.inception import InceptionScore

        return InceptionScore(feature=features.module, splits=splits, normalize=False)

    return _build(build, features, "the Inception Score")


def _require_torchmetrics() -> None:
    import importlib.util

    if importlib.util.find_spec("torchmetrics") is None:
        raise FailedPrecondition("the image metrics are torchmetrics': pip install 'torchmetrics>=1.9,<2'")


def _build(build, features: FeatureExtractor, what: str):
    _require_torchmetrics()
    if not isinstance(features.module, (int, str)):
        with warnings.catch_warnings():  # "stores all features in memory": known, bounded by the sample count
            warnings.simplefilter("ignore", UserWarning)
            return build()
    # The standard InceptionV3: torch-fidelity imports torchvision at import time, and the weights come from GitHub.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return build()
    except (ImportError, RuntimeError, OSError) as exc:  # missing package, torchvision op mismatch, no download
        first_sentence = (str(exc).splitlines() or [""])[0].split(". ")[0]
        raise FailedPrecondition(
            f"{what} needs torchmetrics' standard InceptionV3 (torch-fidelity), which cannot load here "
            f"({exc.__class__.__name__}: {first_sentence[:160]}); "
            + _INSTALL_HINT.format(torch=torch.__version__.split("+")[0])
        ) from None


def _batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[object]:
    """uint8 HWC numpy images → uint8 ``[B, 3, H, W]`` tensors, grouped by size (each batch has one size)."""
    batch: list[np.ndarray] = []
    for image in images:
        image = _check_rgb(image)
        if batch and (len(batch) == batch_size or batch[0].shape != image.shape):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
            batch = []
        batch.append(image)
    if batch:
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------- tiny extractor
def tiny_feature_extractor(features: int = 16, seed: int = 0) -> FeatureExtractor:
    """A seeded random conv net, ``uint8 [N, 3, H, W]`` → ``float64 [N, features]``: tests and demos only (its
    numbers are not comparable to any published FID/IS). Used as FID features or as IS logits."""
    torch.manual_seed(seed)
    net = TinyFeatureNet(features).eval()
    return FeatureExtractor(
        f"tiny random conv net ({features}-d, seed {seed}): not comparable to published numbers", net
    )


class TinyFeatureNet(torch.nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.convs = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.Tanh(),
            torch.nn.Conv2d(8, features, 3, stride=2, padding=1), torch.nn.Tanh(),
        )  # fmt: skip
        self.num_features = features  # torchmetrics reads it instead of probing with a dummy image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        # float64 out: torchmetrics accumulates FID statistics in float64 and casts its result to our dtype
        return self.convs(x).mean(dim=(2, 3)).double()


# --------------------------------------------------------------------------------------------- CLIP
class ClipScorer:
    """CLIP similarity of an image and its caption: ``100 · max(cos(image embedding, text embedding), 0)``, computed
    by torchmetrics' ``CLIPScore`` for one pair (its per-batch value); a data set's number is the mean over images."""

    def __init__(self, model, processor, source: str):
        _require_torchmetrics()
        from torchmetrics.multimodal.clip_score import CLIPScore

        self.source = source
        self.metric = CLIPScore(model_name_or_path=lambda: (_ClipFeatures(model), processor))
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)

    def score(self, rgb: np.ndarray, caption: str) -> float:
        image = torch.from_numpy(_check_rgb(rgb)).permute(2, 0, 1).contiguous()
        with torch.inference_mode():
            value = self.metric(image, caption)  # forward: this pair's score; the running state is unused
        return float(value)


def load_clip(name_or_path: str = DEFAULT_CLIP_MODEL, *, field: str = "clip_model") -> ClipScorer:
    """A transformers ``CLIPModel`` (float32, CPU) and its processor from a hub id or a local folder in the hub layout
    (``config.json``, weights, ``preprocessor_config.json``, ``vocab.json`` + ``merges.txt`` or ``tokenizer.json``)."""
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(name_or_path).expanduser()
    if not path.exists() and (str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1):
        raise NotFound(f"{field}={name_or_path!r}: no such folder", field=field)
    try:
        model = CLIPModel.from_pretrained(str(name_or_path), dtype=torch.float32).eval()
        processor = CLIPProcessor(
            image_processor=CLIPImageProcessorPil.from_pretrained(str(name_or_path)),
            tokenizer=CLIPTokenizer.from_pretrained(str(name_or_path)),
        )
    except (OSError, ValueError) as exc:
        where = (
            "the folder" if path.exists() else "the Hugging Face Hub (offline: download it elsewhere, pass the folder)"
        )
        raise NotFound(
            f"{field}={name_or_path!r}: cannot load a CLIP model and processor from {where} "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})",
            field=field,
        ) from None
    # transformers 5 builds an empty tokenizer from some incomplete folders instead of failing: check a known text
    ids = processor.tokenizer("a photo of a cat")["input_ids"]
    if ids != [49406, 320, 1125, 539, 320, 2368, 49407]:
        raise FailedPrecondition(
            f"{field}={name_or_path!r}: its tokenizer does not encode like CLIP's (got {ids} for 'a photo of a cat'); "
            "the folder needs CLIP's vocab.json and merges.txt",
            field=field,
        )
    return ClipScorer(model, processor, str(name_or_path))


class _ClipFeatures(torch.nn.Module):
    """``get_image_features`` / ``get_text_features`` returning the projected embeddings as tensors (what
    torchmetrics 1.9 expects; transformers 5 returns ``BaseModelOutputWithPooling`` with them as ``pooler_output``)."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.config = clip, clip.config

    def get_image_features(self, pixel_values):
        return _embedding(self.clip.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids, attention_mask=None):
        return _embedding(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def _embedding(out):
    return out if hasattr(out, "norm") else out.pooler_output  # a tensor on transformers 4, an output object on 5


def make_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight CLIP (32×32 images, 32-d towers, 16-d projection, CLIP's real 49,408-token
    tokenizer written offline) in ``openai/clip-vit-large-patch14``'s layout: for tests and demos only."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from ..models.tokenizer import write_clip_tokenizer

    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "max_position_embeddings": 77, **tower},
        vision_config={"image_size": 32, "patch_size": 8, **tower},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).eval().save_pretrained(directory, safe_serialization=True)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    write_clip_tokenizer(directory)
    return directory


# --------------------------------------------------------------------------------------------- helpers
def square_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """A reference photo for FID/rFID: centre crop to the target aspect ratio, then a bicubic (Pillow) resize."""
    from PIL import Image

    rgb = _check_rgb(rgb)
    h, w = rgb.shape[:2]
    target = width / height
    if w / h > target:  # too wide: crop columns
        cw = max(1, round(h * target))
        rgb = rgb[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = max(1, round(w / target))
        rgb = rgb[(h - ch) // 2 : (h - ch) // 2 + ch]
    if rgb.shape[:2] == (height, width):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.BICUBIC))


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {tuple(rgb.shape)}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InvalidArgument(f"images must be uint8 [H, W, 3] RGB arrays, got {got}", field="images")
    return rgb


__all__ = [
    "DEFAULT_CLIP_MODEL",
    "INCEPTION_FID",
    "INCEPTION_IS",
    "IS_SPLITS",
    "ClipScorer",
    "FeatureExtractor",
    "frechet_distance",
    "inception_score",
    "load_clip",
    "make_tiny_clip",
    "reconstruct",
    "square_resize",
    "standard_features",
    "tiny_feature_extractor",
]
