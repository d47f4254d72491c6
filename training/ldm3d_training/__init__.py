"""``ldm3d_training``: fine-tune LDM3D (paper §3.1.2–3.1.3) and publish the result as a new release.

    ldm3d-train prepare --input data.jsonl --out prep --resolution 512
    ldm3d-train autoencoder --model CompVis/stable-diffusion-v1-4 --data prep --out runs/vae
    ldm3d-train unet --model CKPT --vae runs/vae --data prep --out runs/unet
    ldm3d-train publish runs/unet --repository model_repository --promote
    torchrun --nproc_per_node 8 -m ldm3d_training unet ...        # distributed, any stage

See ``training/README.md``. The package builds on ``ldm3d`` (codec, pipeline, export, depth models) and never
copies it.
"""

__version__ = "0.1.0"
