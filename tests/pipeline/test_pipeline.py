"""Behaviour of the in-process pipeline beyond parity: defaults, seeds, truncation, cancellation, image-to-image."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ldm3d.errors import Cancelled, InvalidArgument
from ldm3d.pipeline import GenerateParams


def test_defaults_come_from_the_checkpoint(tiny_pipeline):
    res = tiny_pipeline(GenerateParams(prompt="a house", steps=2, seed=0))
    spec = tiny_pipeline.spec
    assert res.params.height == spec.sample_size * spec.vae_scale_factor == 64
    assert res.params.scheduler == "pndm"  # the checkpoint's own scheduler_config
    assert res.metadata["model"]["checkpoint_sha256"] == spec.checkpoint_hash and len(spec.checkpoint_hash) == 64


def test_same_seed_same_image_and_drawn_seed_is_reported(tiny_pipeline):
    a = tiny_pipeline(GenerateParams(prompt="a house", steps=2, seed=11))
    b = tiny_pipeline(GenerateParams(prompt="a house", steps=2, seed=11))
    c = tiny_pipeline(GenerateParams(prompt="a house", steps=2))
    np.testing.assert_array_equal(a.rgb[0], b.rgb[0])
    np.testing.assert_array_equal(a.depth[0], b.depth[0])
    d = tiny_pipeline(GenerateParams(prompt="a house", steps=2, seed=c.params.seed))
    np.testing.assert_array_equal(c.depth[0], d.depth[0])


def test_long_prompt_is_truncated_with_a_warning_naming_the_count(tiny_pipeline, caplog):
    prompt = " ".join(["castle"] * 100)  # 100 words + BOS/EOS = 102 tokens
    with caplog.at_level(logging.WARNING, logger="ldm3d"):
        res = tiny_pipeline(GenerateParams(prompt=prompt, steps=1, seed=0))
    assert "25 of this prompt's 102 were dropped" in caplog.text
    assert res.metadata["truncated_tokens"] == 25 and res.metadata["prompt_tokens"] == 102


def test_repeated_prompts_hit_the_cache(tiny_pipeline):
    before = tiny_pipeline.text.cache_hits
    tiny_pipeline.text.encode(["cache me"])
    tiny_pipeline.text.encode(["cache me"])
    assert tiny_pipeline.text.cache_hits == before + 1


def test_cancellation_stops_within_one_step(tiny_pipeline):
    seen = []
    with pytest.raises(Cancelled, match="after 2 of"):
        tiny_pipeline(GenerateParams(prompt="x", steps=10, seed=0), on_step=lambda s, n, e: seen.append(s),
                      should_stop=lambda: len(seen) >= 2)
    assert seen == [1, 2]


def test_progress_reports_every_step(tiny_pipeline):
    seen = []
    tiny_pipeline(GenerateParams(prompt="x", steps=4, seed=0, scheduler="ddim"), on_step=lambda s, n, e: seen.append((s, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_image_to_image_uses_the_init_image_and_strength(tiny_pipeline):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (64, 64), dtype=np.uint16)
    base = dict(prompt="a red house", steps=10, seed=3, scheduler="ddim")
    steps = []
    a = tiny_pipeline(GenerateParams(**base, init_rgb=rgb, init_depth=depth, strength=0.5),
                      on_step=lambda s, n, e: steps.append(n))
    assert steps[-1] == 5  # strength 0.5 of 10 steps
    b = tiny_pipeline(GenerateParams(**base, init_rgb=255 - rgb, init_depth=depth, strength=0.5))
    assert not np.array_equal(a.rgb[0], b.rgb[0])
    assert a.metadata["image_to_image"] == {"strength": 0.5}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(height=70), "height"),
        (dict(width=4096), "width"),
        (dict(steps=0), "steps"),
        (dict(steps=1000), "steps"),  # past the training schedule with steps_offset=1
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(scheduler="nope"), "scheduler"),
        (dict(prompt="  "), "prompt"),
        (dict(num_images=0), "num_images"),
        (dict(seed=-3), "seed"),
        (dict(init_rgb=np.zeros((64, 64, 3), np.uint8)), "init_depth"),
        (dict(init_rgb=np.zeros((32, 32, 3), np.uint8), init_depth=np.zeros((32, 32), np.uint16)), "init_rgb"),
        (dict(init_rgb=np.zeros((64, 64, 3), np.uint8), init_depth=np.zeros((64, 64), np.uint16), strength=0.0),
         "strength"),
    ],
)
def test_bad_parameters_name_their_field(tiny_pipeline, kwargs, field):
    params = GenerateParams(**{"prompt": "x", "steps": 2, **kwargs})
    with pytest.raises(InvalidArgument) as err:
        tiny_pipeline(params)
    assert err.value.field == field and field in str(err.value)


def test_a_larger_batch_after_a_smaller_one_is_not_split_on_torch(tiny_pipeline):
    """The torch runtime has no batch limit: the U-Net sees the whole [uncond, cond] batch whatever came before."""
    tiny_pipeline(GenerateParams(prompt="x", steps=1, seed=0, num_images=1))
    seen = []
    infer = tiny_pipeline.runtime.infer

    def spy(model, inputs, version=None):
        if model == "unet":
            seen.append(inputs["sample"].shape[0])
        return infer(model, inputs, version)

    tiny_pipeline.runtime.infer = spy
    try:
        tiny_pipeline(GenerateParams(prompt="x", steps=1, seed=0, num_images=3, scheduler="ddim"))
    finally:
        del tiny_pipeline.runtime.infer
    assert seen == [6]


@pytest.mark.parametrize("scheduler", ["pndm", "ddim"])
def test_progress_counts_the_steps_asked_for(tiny_pipeline, scheduler):
    """PNDM runs steps + 1 U-Net calls (a warm-up timestep); progress still says 1..steps of steps, like diffusers."""
    seen = []
    tiny_pipeline(GenerateParams(prompt="x", steps=4, seed=1, scheduler=scheduler, height=64, width=64),
                  on_step=lambda step, total, _elapsed: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
