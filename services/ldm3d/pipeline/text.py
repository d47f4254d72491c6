"""Stage 1 — text encoding: CLIP tokenizer (77 tokens, truncation reported) → frozen text encoder → [B, 77, D]."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..models.tokenizer import load_clip_tokenizer
from ..runtime import ModelRuntime
from .spec import PipelineSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedText:
    embeddings: np.ndarray  # float32 [B, max_text_length, D]
    token_counts: list[int]  # tokens per prompt before truncation, BOS/EOS included
    truncated_tokens: list[int]  # tokens dropped per prompt (0 when it fit)


TEXT_CACHE_SIZE = 256  # prompts kept by default (the servers' --text-cache-size sets it)


class TextEncoding:
    """Tokenise and encode prompts; repeated prompts come from an LRU cache (thread-safe)."""

    def __init__(self, runtime: ModelRuntime, spec: PipelineSpec, cache_size: int = TEXT_CACHE_SIZE):
        self.runtime, self.spec = runtime, spec
        self.tokenizer = load_clip_tokenizer(spec.tokenizer_dir)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self.cache_hits = 0

    def tokenize(self, prompts: list[str]) -> tuple[np.ndarray, list[int]]:
        """``int64 [B, max_len]`` ids padded/truncated like diffusers, and each prompt's untruncated token count."""
        n = self.spec.max_text_length
        # A fast (Rust) tokenizer keeps padding/truncation settings on the shared object, and we call it twice with
        # different ones: concurrent calls would race (seen in the servers: [1, 4, D] embeddings).
        with self._tokenizer_lock:
            ids = self.tokenizer(prompts, padding="max_length", max_length=n, truncation=True,
                                 return_tensors="np").input_ids
            counts = [len(x) for x in self.tokenizer(prompts, padding=False, truncation=False, verbose=False).input_ids]
        return ids.astype(np.int64), counts

    def encode(self, prompts: list[str]) -> EncodedText:
        n = self.spec.max_text_length
        with self._lock:
            hits = {p: self._cache[p] for p in prompts if p in self._cache}
            for p in hits:
                self._cache.move_to_end(p)
            self.cache_hits += sum(p in hits for p in prompts)
        todo = list(dict.fromkeys(p for p in prompts if p not in hits))
        fresh: dict[str, tuple[np.ndarray, int]] = {}
        if todo:
            ids, counts = self.tokenize(todo)
            emb = self.runtime.infer("text_encoder", {"input_ids": ids}, version=self.spec.versions.get("text_encoder"))
            hidden = emb["last_hidden_state"]
            for i, p in enumerate(todo):
                fresh[p] = (hidden[i].copy(), counts[i])
                dropped = counts[i] - n
                if dropped > 0:
                    log.warning("prompt truncated: CLIP reads %d tokens, %d of this prompt's %d were dropped (%r…)",
                                n, dropped, counts[i], p[:60])
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        table = {**hits, **fresh}
        embeddings = np.stack([table[p][0] for p in prompts]).astype(np.float32, copy=False)
        counts = [table[p][1] for p in prompts]
        return EncodedText(embeddings, counts, [max(0, c - n) for c in counts])
