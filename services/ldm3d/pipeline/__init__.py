"""Text → RGBD: three stages (text encoding, sampling, RGBD autoencoder) and the pipeline that chains them."""

from .autoencoder import RGBDAutoencoder
from .ldm3d import GenerateResult, LDM3DPipeline
from .params import GenerateParams
from .sampler import Sampler
from .schedulers import SCHEDULERS
from .spec import PipelineSpec
from .text import EncodedText, TextEncoding

__all__ = ["EncodedText", "GenerateParams", "GenerateResult", "LDM3DPipeline", "PipelineSpec", "RGBDAutoencoder",
           "SCHEDULERS", "Sampler", "TextEncoding"]
