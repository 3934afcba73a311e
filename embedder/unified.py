"""Embeddings for categorical fields: Unified Embedding (feature multiplexing) and its two baselines.

Unified Embedding (Coleman et al., "Unified Embedding: Battle-Tested Feature Representations for Web-Scale
ML Systems", NeurIPS 2023) serves every categorical feature from shared hashed tables. Feature f gets k_f
chunks; chunk j of value v is row ``h_{f,j}(v) mod B`` of table ``j mod T`` (T tables of B rows x d_c), with
an independent hash per (feature, chunk) salt, and the chunks are concatenated:

    E_f(v) = concat_{j < k_f} W_{j mod T}[ h_{f,j}(v) mod B ]        dim_f = k_f * d_c

A multi-valued field (genres, tags) is a bag: the weighted mean of its tokens' vectors (weights = repeats).
Two baselines with the same output dims (dim_f = k_f * d_c) for comparisons at equal parameter bytes:

- ``PerFeatureHashedEmbedding``: the hashing trick, one table of B_f rows x dim_f per feature, one hash.
- ``CollisionFreeEmbedding``: one row per vocabulary value per feature (the upper bound; no hashing).

Hashing is stable across processes, machines and Python versions: ``h_{f,j}(v)`` is the first 8 bytes
(little-endian) of BLAKE2b over the value's canonical UTF-8 token, keyed by BLAKE2b(seed, feature, chunk); never
Python's ``hash`` (salted per process). The hash is versioned (``HASH_VERSION``) and saved with the model.

Values (every class, every feature), defined behaviour:

- ``str`` is the token itself (case-sensitive, not stripped); ``int`` / numpy integers and integral floats
  (``1995.0``) are their decimal string, so a column read as text or as numbers hits the same rows.
- missing: ``None``, NaN and ``""`` contribute a zero vector (a bag of only missing tokens is empty, and an
  empty bag is a zero vector).
- unseen: hashed tables have no vocabulary, an unseen value hashes to rows like any other; the collision-free
  table maps it to a zero vector (``unseen="zero"``, counted in ``unseen_count``) or refuses it
  (``unseen="error"``, LookupError).
- wrong type: ``bool``, non-integral floats, bytes, dicts, a list given to a single-valued feature, a bare
  string given to a multi-valued feature without ``sep``: TypeError naming the feature, expected and received.

PyTorch has ``nn.EmbeddingBag`` but no salted multi-chunk hashed lookups or feature multiplexing, hence this
module. Example::

    from telescope.embedder.unified import FeatureSpec, UnifiedEmbedding
    emb = UnifiedEmbedding([FeatureSpec("movie", chunks=2), FeatureSpec("genres", multi=True, sep="|")],
                           chunk_dim=8, rows=1000)
    vectors = emb({"movie": [1, 2], "genres": ["Comedy|Drama", None]})   # shape (2, 16 + 8)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

HASH_VERSION = "blake2b64-keyed-v1"
BYTES_PER_PARAM = 4  # float32 tables
CONFIG_FILE = "categorical.json"
WEIGHTS_FILE = "categorical.safetensors"


# -- values -> tokens ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """A categorical feature: its name, chunks k_f, whether it is a bag, and where it is read from.

    ``column`` is the metadata column holding it (default: ``name``); ``sep`` splits a string value of a
    multi-valued feature (``"Comedy|Drama"`` with ``sep="|"``).
    """

    name: str
    chunks: int = 1
    multi: bool = False
    sep: str | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if isinstance(self.chunks, bool) or not isinstance(self.chunks, int) or self.chunks < 1:
            raise ValueError(f"chunks of feature {self.name!r}: expected an integer >= 1, got {self.chunks!r}")
        if self.sep is not None and (not self.multi or not isinstance(self.sep, str) or not self.sep):
            raise ValueError(f"sep of feature {self.name!r}: expected a non-empty string on a multi feature, got {self.sep!r}")

    @property
    def source(self) -> str:
        return self.column or self.name


def canonical_token(feature: str, value: object) -> str | None:
    """The token a scalar value is hashed/looked up as; None for a missing value; TypeError for a wrong type."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"feature {feature!r}: expected str, int or None, got bool {value!r}")
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        raise TypeError(f"feature {feature!r}: expected str, int or None, got non-integral float {value!r}")
    raise TypeError(f"feature {feature!r}: expected str, int or None, got {type(value).__name__} {value!r}")


def bag_tokens(spec: FeatureSpec, value: object) -> Counter:
    """Token -> count for one example's value of ``spec`` (one token at most for a single-valued feature)."""
    if spec.multi:
        if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)) or (isinstance(value, str) and not value):
            items: Sequence = ()
        elif isinstance(value, str):
            if spec.sep is None:
                raise TypeError(
                    f"feature {spec.name!r}: expected a list of values (or a string with sep set), got str {value!r}"
                )
            items = value.split(spec.sep)
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = list(value)
        else:
            raise TypeError(f"feature {spec.name!r}: expected a list of values or None, got {type(value).__name__} {value!r}")
    else:
        if isinstance(value, (list, tuple, set, np.ndarray, dict)):
            raise TypeError(f"feature {spec.name!r}: expected one value (single-valued feature), got {type(value).__name__} {value!r}")
        items = (value,)
    tokens = (canonical_token(spec.name, v) for v in items)
    return Counter(t for t in tokens if t is not None)


# -- the hash ------------------------------------------------------------------------------------------------------
def salt_key(seed: int, feature: str, chunk: int) -> bytes:
    """The BLAKE2b key of hash function h_{feature, chunk} (32 bytes)."""
    return hashlib.blake2b(f"{HASH_VERSION}\x1f{seed}\x1f{feature}\x1f{chunk}".encode(), digest_size=32).digest()


@lru_cache(maxsize=1 << 20)
def stable_hash(key: bytes, token: str) -> int:
    """A 64-bit hash of ``token`` under ``key``: the same on every process and machine."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8, key=key).digest(), "little")


# -- batches of bags -----------------------------------------------------------------------------------------------
@dataclass
class Bags:
    """A batch of bags for one feature: ``rows`` (n, L, k) table rows per token and chunk, ``weights`` (n, L).

    Each example's weights sum to 1 (weighted mean), or to 0 for an empty bag (a zero vector). Padding has
    weight 0. ``select(idx)`` takes examples, so lookups can be computed once and batched later.
    """

    rows: torch.Tensor
    weights: torch.Tensor

    def select(self, idx: torch.Tensor | np.ndarray) -> "Bags":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Bags(self.rows[idx], self.weights[idx])

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _pack(rows_per_example: list[list[list[int]]], weights_per_example: list[list[float]], chunks: int) -> Bags:
    n = len(rows_per_example)
    width = max([len(r) for r in rows_per_example] + [1])
    rows = np.zeros((n, width, chunks), dtype=np.int64)
    weights = np.zeros((n, width), dtype=np.float32)
    for i, (r, w) in enumerate(zip(rows_per_example, weights_per_example)):
        if r:
            rows[i, : len(r)] = r
            total = float(sum(w))
            weights[i, : len(w)] = np.asarray(w, dtype=np.float32) / total
    return Bags(torch.from_numpy(rows), torch.from_numpy(weights))


# -- the modules ---------------------------------------------------------------------------------------------------
class CategoricalEmbedding(nn.Module):
    """Base: features -> concatenated vectors. Subclasses say how a token maps to rows and own the tables."""

    kind = "base"

    def __init__(self, features: Sequence[FeatureSpec], chunk_dim: int):
        super().__init__()
        features = [FeatureSpec(**f) if isinstance(f, Mapping) else f for f in features]
        if not features:
            raise ValueError("features: expected at least one FeatureSpec, got none")
        for f in features:
            if not isinstance(f, FeatureSpec):
                raise TypeError(f"features: expected FeatureSpec items, got {type(f).__name__} {f!r}")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"features: expected distinct names, got {names}")
        if isinstance(chunk_dim, bool) or not isinstance(chunk_dim, int) or chunk_dim < 1:
            raise ValueError(f"chunk_dim: expected an integer >= 1, got {chunk_dim!r}")
        self.features = {f.name: f for f in features}
        self.chunk_dim = chunk_dim

    # -- description -----------------------------------------------------------------------------------------
    def feature_dim(self, name: str) -> int:
        return self.spec(name).chunks * self.chunk_dim

    def output_dim(self, names: Sequence[str] | None = None) -> int:
        return sum(self.feature_dim(n) for n in (names or list(self.features)))

    def spec(self, name: str) -> FeatureSpec:
        if name not in self.features:
            raise LookupError(f"feature: expected one of {sorted(self.features)}, got {name!r}")
        return self.features[name]

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the embedding tables (the budget the comparisons hold equal)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    # -- lookups ---------------------------------------------------------------------------------------------
    def lookup(self, name: str, values: Sequence[object]) -> Bags:
        """Rows and weights of each example's value of feature ``name`` (hashing or vocabulary; no parameters)."""
        spec = self.spec(name)
        rows, weights = [], []
        for value in values:
            bag = bag_tokens(spec, value)
            r, w = [], []
            for token, count in bag.items():
                token_rows = self._token_rows(spec, token)
                if token_rows is not None:
                    r.append(token_rows)
                    w.append(float(count))
            rows.append(r)
            weights.append(w)
        return _pack(rows, weights, self._lookups(spec))

    def _token_rows(self, spec: FeatureSpec, token: str) -> list[int] | None:
        raise NotImplementedError

    def _lookups(self, spec: FeatureSpec) -> int:
        return 1

    def _tables(self, name: str) -> list[tuple[torch.Tensor, int]]:
        """(table, chunk) for each lookup column of feature ``name``."""
        raise NotImplementedError

    # -- vectors ---------------------------------------------------------------------------------------------
    def embed(self, name: str, bags: Bags) -> torch.Tensor:
        """(n, feature_dim) vectors of one feature's bags."""
        parts = []
        for j, (table, _) in enumerate(self._tables(name)):
            vectors = table[bags.rows[..., j]]  # (n, L, width)
            parts.append((vectors * bags.weights.unsqueeze(-1)).sum(dim=1))
        return torch.cat(parts, dim=-1)

    def embed_bags(self, bags: Mapping[str, Bags], names: Sequence[str]) -> torch.Tensor:
        """(n, output_dim(names)) vectors: the features' vectors concatenated in ``names`` order."""
        return torch.cat([self.embed(n, bags[n]) for n in names], dim=-1)

    def forward(self, values: Mapping[str, Sequence[object]]) -> torch.Tensor:
        """Vectors of raw values: ``{feature: [value per example]}``, concatenated in the mapping's order."""
        names = list(values)
        lengths = {len(values[n]) for n in names}
        if len(lengths) != 1:
            raise ValueError(f"values: expected the same number of examples per feature, got {dict((n, len(values[n])) for n in names)}")
        return self.embed_bags({n: self.lookup(n, values[n]) for n in names}, names)

    # -- persistence -----------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "kind": self.kind,
            "hash_version": HASH_VERSION,
            "features": [asdict(f) for f in self.features.values()],
            "chunk_dim": self.chunk_dim,
        }

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, sort_keys=True))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_FILE))
        return folder


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _table(rows: int, width: int, generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.randn(rows, width, generator=generator) * (1.0 / math.sqrt(width)))


class UnifiedEmbedding(CategoricalEmbedding):
    """Feature multiplexing: T shared tables of ``rows`` x ``chunk_dim``; chunk j of feature f reads table j mod T.

    Arguments: ``features`` (FeatureSpec list; ``chunks`` is k_f), ``chunk_dim`` (d_c), ``rows`` (B, per table),
    ``num_tables`` (T, default 1), ``seed`` (salts every hash; part of the model). Parameter bytes:
    ``T * B * d_c * 4``. Neighbours: PerFeatureHashedEmbedding (one table per feature) and
    CollisionFreeEmbedding (no hashing), same output dims.
    """

    kind = "unified"

    def __init__(self, features: Sequence[FeatureSpec], chunk_dim: int, rows: int, num_tables: int = 1, seed: int = 0):
        super().__init__(features, chunk_dim)
        self.rows = _check_positive("rows", rows)
        self.num_tables = _check_positive("num_tables", num_tables)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        self.tables = nn.ParameterList([_table(self.rows, chunk_dim, g) for _ in range(self.num_tables)])
        self._keys = {f.name: [salt_key(seed, f.name, j) for j in range(f.chunks)] for f in self.features.values()}

    @classmethod
    def for_budget(cls, features: Sequence[FeatureSpec], chunk_dim: int, budget_bytes: int, num_tables: int = 1, seed: int = 0) -> "UnifiedEmbedding":
        """The largest tables that fit ``budget_bytes``."""
        rows = int(budget_bytes) // (_check_positive("num_tables", num_tables) * _check_positive("chunk_dim", chunk_dim) * BYTES_PER_PARAM)
        if rows < 1:
            raise ValueError(f"budget_bytes: {budget_bytes} is below one row per table ({num_tables * chunk_dim * BYTES_PER_PARAM} bytes)")
        return cls(features, chunk_dim, rows, num_tables, seed)

    def _lookups(self, spec: FeatureSpec) -> int:
        return spec.chunks

    def _token_rows(self, spec: FeatureSpec, token: str) -> list[int]:
        return [stable_hash(key, token) % self.rows for key in self._keys[spec.name]]

    def _tables(self, name: str) -> list[tuple[torch.Tensor, int]]:
        return [(self.tables[j % self.num_tables], j) for j in range(self.spec(name).chunks)]

    def config(self) -> dict:
        return {**super().config(), "rows": self.rows, "num_tables": self.num_tables, "seed": self.seed}


class PerFeatureHashedEmbedding(CategoricalEmbedding):
    """The hashing trick: feature f has its own table of ``rows[f]`` x (k_f * d_c), one salted hash.

    ``for_budget`` splits a byte budget across features in proportion to each feature's collision-free size
    (vocabulary x dim), so every table has the same load (values per row), or gives every feature the same rows.
    """

    kind = "per_feature"

    def __init__(self, features: Sequence[FeatureSpec], chunk_dim: int, rows: Mapping[str, int], seed: int = 0):
        super().__init__(features, chunk_dim)
        if set(rows) != set(self.features):
            raise ValueError(f"rows: expected a row count for each of {sorted(self.features)}, got {sorted(rows)}")
        self.rows = {n: _check_positive(f"rows[{n!r}]", rows[n]) for n in self.features}
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        # a list in feature order: feature names ("user.id") may hold dots, which parameter names may not
        self.tables = nn.ParameterList([_table(self.rows[n], self.feature_dim(n), g) for n in self.features])
        self._keys = {n: salt_key(seed, n, 0) for n in self.features}

    @classmethod
    def for_budget(
        cls, features: Sequence[FeatureSpec], chunk_dim: int, budget_bytes: int, vocab_sizes: Mapping[str, int],
        seed: int = 0, allocation: str = "proportional",
    ) -> "PerFeatureHashedEmbedding":
        """Tables that fit ``budget_bytes`` (each feature keeps at least one row).

        ``allocation="proportional"``: rows_f = |V_f| x the same fraction (every table has the same load).
        ``allocation="uniform"``: the same row count r for every feature, capped at |V_f|, r as large as fits
        (small vocabularies become collision-free, the rest share what is left).
        """
        specs = {f.name: f for f in features}
        width = {n: specs[n].chunks * chunk_dim * BYTES_PER_PARAM for n in specs}
        if allocation == "proportional":
            fraction = min(1.0, budget_bytes / sum(vocab_sizes[n] * width[n] for n in specs))
            rows = {n: max(1, int(vocab_sizes[n] * fraction)) for n in specs}
        elif allocation == "uniform":
            fits = lambda r: sum(min(r, vocab_sizes[n]) * width[n] for n in specs) <= budget_bytes  # noqa: E731
            lo, hi = 1, max(vocab_sizes[n] for n in specs)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
            rows = {n: max(1, min(lo, vocab_sizes[n])) for n in specs}
        else:
            raise ValueError(f"allocation: expected 'proportional' or 'uniform', got {allocation!r}")
        return cls(features, chunk_dim, rows, seed)

    def _token_rows(self, spec: FeatureSpec, token: str) -> list[int]:
        return [stable_hash(self._keys[spec.name], token) % self.rows[spec.name]]

    def _tables(self, name: str) -> list[tuple[torch.Tensor, int]]:
        return [(self.tables[list(self.features).index(name)], 0)]

    def config(self) -> dict:
        return {**super().config(), "rows": self.rows, "seed": self.seed}


class CollisionFreeEmbedding(CategoricalEmbedding):
    """One row per vocabulary value per feature (the upper bound): table f is |V_f| x (k_f * d_c).

    ``vocab`` maps each feature to its values (any accepted type; stored as tokens, order kept). An unseen
    value gives a zero vector (``unseen="zero"``, counted in ``unseen_count``) or LookupError (``"error"``).
    """

    kind = "collision_free"

    def __init__(self, features: Sequence[FeatureSpec], chunk_dim: int, vocab: Mapping[str, Sequence[object]], unseen: str = "zero", seed: int = 0):
        super().__init__(features, chunk_dim)
        if set(vocab) != set(self.features):
            raise ValueError(f"vocab: expected values for each of {sorted(self.features)}, got {sorted(vocab)}")
        if unseen not in ("zero", "error"):
            raise ValueError(f"unseen: expected 'zero' or 'error', got {unseen!r}")
        self.unseen = unseen
        self.unseen_count = 0
        self.seed = seed
        self.vocab: dict[str, dict[str, int]] = {}
        for n in self.features:
            tokens = [canonical_token(n, v) for v in vocab[n]]
            self.vocab[n] = {t: i for i, t in enumerate(dict.fromkeys(t for t in tokens if t is not None))}
            if not self.vocab[n]:
                raise ValueError(f"vocab[{n!r}]: expected at least one value, got none")
        g = torch.Generator().manual_seed(seed)
        self.tables = nn.ParameterList([_table(len(self.vocab[n]), self.feature_dim(n), g) for n in self.features])

    def _token_rows(self, spec: FeatureSpec, token: str) -> list[int] | None:
        row = self.vocab[spec.name].get(token)
        if row is None:
            if self.unseen == "error":
                raise LookupError(f"feature {spec.name!r}: value {token!r} is not in the vocabulary ({len(self.vocab[spec.name])} values)")
            self.unseen_count += 1
            return None
        return [row]

    def _tables(self, name: str) -> list[tuple[torch.Tensor, int]]:
        return [(self.tables[list(self.features).index(name)], 0)]

    def config(self) -> dict:
        return {**super().config(), "vocab": {n: list(v) for n, v in self.vocab.items()}, "unseen": self.unseen, "seed": self.seed}


KINDS = {c.kind: c for c in (UnifiedEmbedding, PerFeatureHashedEmbedding, CollisionFreeEmbedding)}


def from_config(config: Mapping) -> CategoricalEmbedding:
    """The module a ``config()`` describes, with freshly initialised tables."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")
    version = config.pop("hash_version", None)
    if version != HASH_VERSION:
        raise ValueError(f"hash_version: expected {HASH_VERSION!r}, got {version!r} (rows would differ)")
    config["features"] = [FeatureSpec(**f) for f in config["features"]]
    return KINDS[kind](**config)


def load_categorical(folder: str | Path) -> CategoricalEmbedding:
    """A module written by ``save``: its config and its trained tables."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).exists():
        raise FileNotFoundError(f"categorical embedding: no {CONFIG_FILE} in {str(folder)!r}")
    module = from_config(json.loads((folder / CONFIG_FILE).read_text()))
    module.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return module
