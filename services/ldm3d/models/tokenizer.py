"""The real CLIP BPE tokenizer (the one Stable Diffusion v1.4 ships), built offline.

No model hub is reachable here, but the ``open-clip-torch`` wheel ships OpenAI's BPE merges
(``open_clip/bpe_simple_vocab_16e6.txt.gz``). From it we rebuild exactly the ``vocab.json`` (49,408 tokens) and
``merges.txt`` (48,894 merges) of ``openai/clip-vit-large-patch14`` / ``CompVis/stable-diffusion-v1-4``'s tokenizer,
following OpenAI's ``simple_tokenizer.py``. We only read the data file; ``open_clip`` is never imported (it would pull
torchvision). Install it with ``pip install --no-deps open-clip-torch``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from ..errors import FailedPrecondition

MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_N_MERGES = 49152 - 256 - 2  # OpenAI's simple_tokenizer keeps merges[1 : 49152 - 256 - 2 + 1]


def _bytes_to_unicode() -> dict[int, str]:
    # OpenAI CLIP simple_tokenizer.bytes_to_unicode: a reversible map of bytes to printable unicode characters.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_merges_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            "the CLIP BPE merges file is missing: install it with `pip install --no-deps open-clip-torch` "
            "(it ships open_clip/bpe_simple_vocab_16e6.txt.gz; open_clip itself is never imported)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FailedPrecondition(f"{path} is missing from the open-clip-torch install: reinstall it with --no-deps")
    return path


def write_clip_tokenizer(out_dir: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_merges_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : _N_MERGES + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += [BOS, EOS]
    assert len(vocab) == 49408 and len(merges) == 48894, (len(vocab), len(merges))
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def load_clip_tokenizer(folder: str | Path):
    """Load a CLIP tokenizer folder (vocab.json + merges.txt) the way that works on transformers 4 and 5.

    transformers 5's ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently builds an empty tokenizer and,
    without ``model_max_length``, pads to 1e30; ``vocab=``/``merges=`` with an explicit length is reliable.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    max_len = int(cfg.get("model_max_length", MODEL_MAX_LENGTH))
    if max_len > 10_000:  # some hub configs store VERY_LARGE_INTEGER; CLIP's text encoder takes 77 positions
        max_len = MODEL_MAX_LENGTH
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [
        tuple(line.split())
        for line in (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
        if line and not line.startswith("#version")
    ]
    try:
        tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_len)
    except TypeError:  # transformers 4 takes file paths
        tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_len)
    return tok
