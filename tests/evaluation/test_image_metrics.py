"""FID, IS, CLIP similarity and the rFID round trip: torchmetrics' computations fed by our image handling, checked
against direct computations from the same features (tiny random networks: no weights can be downloaded here)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.linalg
import torch

from ldm3d import codec
from ldm3d.errors import FailedPrecondition, InvalidArgument, NotFound
from ldm3d.evaluation import image_metrics as im


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 200, (32, 40, 3), dtype=np.uint8) for _ in range(24)]


@pytest.fixture(scope="module")
def features():
    return im.tiny_feature_extractor(features=16, seed=0)


def _feats(extractor, imgs) -> np.ndarray:
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return extractor.module(batch).numpy().astype(np.float64)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook Fréchet distance between Gaussians fitted to two feature sets (scipy's sqrtm)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------------------------- FID
def test_fid_of_a_set_with_itself_is_zero(images, features):
    assert abs(im.frechet_distance(images, images, features)) < 1e-6


def test_fid_matches_the_textbook_formula_and_grows_with_a_shift(images, features):
    shifted = {s: [np.clip(x.astype(int) + s, 0, 255).astype(np.uint8) for x in images] for s in (15, 40, 80)}
    fids = {s: im.frechet_distance(images, imgs, features, batch_size=5) for s, imgs in shifted.items()}
    assert 0 < fids[15] < fids[40] < fids[80]
    for s, fid in fids.items():
        expected = _frechet(_feats(features, images), _feats(features, shifted[s]))
        assert fid == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_fid_batches_images_of_different_sizes(images, features):
    mixed = images[:12] + [np.ascontiguousarray(x[:24, :24]) for x in images[12:]]
    feats = np.concatenate([_feats(features, mixed[:12]), _feats(features, mixed[12:])])
    fid = im.frechet_distance(images, mixed, features, batch_size=7)
    assert fid == pytest.approx(_frechet(_feats(features, images), feats), rel=1e-4)


def test_fid_refuses_too_few_images_and_wrong_dtypes(images, features):
    with pytest.raises(InvalidArgument, match="at least 2 images on each side; got 24 real and 1 generated"):
        im.frechet_distance(images, images[:1], features)
    with pytest.raises(InvalidArgument, match="uint8"):
        im.frechet_distance(images, [x.astype(np.float32) for x in images], features)


# --------------------------------------------------------------------------------------------- IS
class _Sharpen(torch.nn.Module):
    """Scaled logits: the tiny net's near-zero logits give IS ≈ 1 for anything; scaled, the classes differ."""

    def __init__(self, net, factor: float):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x):
        return self.net(x) * self.factor


def test_inception_score_of_identical_images_is_one(images, features):
    mean, std = im.inception_score([images[0]] * 10, features, splits=2)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_a_direct_computation(features):
    rng = np.random.default_rng(2)  # flat colours with a little noise: the tiny net tells them apart
    images = [np.clip(rng.integers(0, 256, 3) + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
              for _ in range(24)]  # fmt: skip
    sharp = im.FeatureExtractor("sharpened tiny net", _Sharpen(features.module, 20.0))
    logits = torch.from_numpy(_feats(sharp, images))
    p = logits.softmax(1)
    expected = float(torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean()))
    mean, std = im.inception_score(images, sharp, splits=1)
    assert mean == pytest.approx(expected, rel=1e-6) and expected > 1.5 and std is None
    # with splits the shuffle is seeded: the same seed gives the same numbers, and the global RNG is left alone
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = im.inception_score(images, sharp, splits=3, seed=7)
    assert torch.rand(1) == before
    assert im.inception_score(images, sharp, splits=3, seed=7) == a


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_standard_inception_names_what_to_install():
    for kind in ("fid", "is"):
        with pytest.raises(FailedPrecondition, match="pip install torch-fidelity plus a torchvision built for this torch"):
            im.standard_features(kind)
    with pytest.raises(FailedPrecondition, match="torch-fidelity"):
        im.frechet_distance([np.zeros((8, 8, 3), np.uint8)] * 2, [np.zeros((8, 8, 3), np.uint8)] * 2)


# --------------------------------------------------------------------------------------------- CLIP
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return im.make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_clip_score_matches_a_direct_transformers_computation(tiny_clip, images):
    from transformers import CLIPImageProcessorPil, CLIPModel

    scorer = im.load_clip(str(tiny_clip))
    assert isinstance(scorer.metric.processor.image_processor, CLIPImageProcessorPil)
    model = CLIPModel.from_pretrained(tiny_clip, dtype=torch.float32).eval()
    captions = ["a photo of a cat", "a red car parked on a street", "a bowl of fruit", "mountains at dusk"]
    for rgb, caption in zip(images, captions):
        inputs = scorer.metric.processor(text=[caption], images=[rgb], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model(**inputs)
        cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
        assert scorer.score(rgb, caption) == pytest.approx(max(100 * cos, 0.0), rel=1e-5, abs=1e-5)
    # the score depends on the caption and on the image
    assert scorer.score(images[0], captions[0]) != pytest.approx(scorer.score(images[0], captions[1]))
    assert scorer.score(images[0], captions[0]) != pytest.approx(scorer.score(images[1], captions[0]))


def test_load_clip_errors(tmp_path, tiny_clip):
    with pytest.raises(NotFound, match="clip_model='./nowhere': no such folder"):
        im.load_clip("./nowhere")
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_clip / "config.json").read_text())
    with pytest.raises(NotFound, match="cannot load a CLIP model"):
        im.load_clip(str(broken))


# --------------------------------------------------------------------------------------------- rFID round trip
def test_reconstruct_is_the_autoencoders_round_trip(tiny_pipeline, features):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (64, 64), dtype=np.uint16)
    out_rgb, out_depth = im.reconstruct(tiny_pipeline.autoencoder, rgb, depth)
    assert out_rgb.shape == rgb.shape and out_rgb.dtype == np.uint8
    assert out_depth.shape == depth.shape and out_depth.dtype == np.uint16
    latents = tiny_pipeline.autoencoder.encode(rgb, depth)
    _, expected_rgb, expected_depth = codec.decode_rgbd(tiny_pipeline.autoencoder.decode(latents))
    np.testing.assert_array_equal(out_rgb, expected_rgb[0])
    np.testing.assert_array_equal(out_depth, expected_depth[0])
    inputs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    recon = [im.reconstruct(tiny_pipeline.autoencoder, x, depth)[0] for x in inputs]
    assert im.frechet_distance(inputs, recon, features) > 0  # a random autoencoder does not reproduce its input


def test_square_resize_centre_crops_then_resizes():
    wide = np.zeros((40, 100, 3), np.uint8)
    wide[:, 30:70] = 255  # the centre 40 columns
    out = im.square_resize(wide, 20, 20)
    assert out.shape == (20, 20, 3) and out.min() == 255
    tall = np.zeros((90, 30, 3), np.uint8)
    tall[30:60] = 200
    assert im.square_resize(tall, 30, 30).min() == 200
    assert im.square_resize(tall, 64, 32).shape == (64, 32, 3)
