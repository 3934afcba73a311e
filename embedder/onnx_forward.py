"""The embedder's forward pass on ONNX Runtime: the same (layer, dim) vectors, faster on CPU, optionally int8.

One ONNX graph per set of output layers: the model's transformer cut to the deepest of them (early exit), then the
model's own Pooling module and every module after it, applied at each asked layer. Inputs are the tokenizer's
tensors; outputs are one pooled sentence embedding per asked layer (before telescope's prefix cut and
re-normalisation, which stay in numpy). Graphs are exported from the loaded torch model with ``torch.onnx.export``
and cached on disk, keyed by the model hash::

    <cache>/onnx/<model_hash>-g<GRAPH_VERSION>/<variant>-L<layers>.onnx        e.g. fp32-L6.onnx, int8-L1-3-6.onnx

``int8`` is ONNX Runtime's dynamic quantization (weights int8 per output channel, activations quantized per batch
at run time; Jacob et al., 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference"): w_q = round(w / s_c), s_c = max|w_c| / 127 per output channel c.

Why by hand: sentence-transformers' own ONNX backend needs ``optimum`` (not in the stack) and exports the full model
only, with no early exit and no telescope pooling modules. Measured figures are in docs/results/bench-embed.md.
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("fp32", "int8")
GRAPH_VERSION = 2  # bump when the export changes: 2 traces eager attention


def onnx_cache_root() -> Path:
    """``$TELESCOPE_CACHE_DIR/onnx``, by default ``~/.cache/telescope/onnx``."""
    root = os.environ.get("TELESCOPE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "telescope")
    return Path(root) / "onnx"


class _PooledLayers(torch.nn.Module):
    """Positional-input wrapper that ONNX export can trace: tensors in, one pooled embedding per layer out."""

    def __init__(
        self, model: torch.nn.Module, pool_layers: Callable, input_names: Sequence[str], layers: tuple[int, ...]
    ):
        super().__init__()
        self.model = model  # a submodule, so that tracing sees its weights as parameters, not constants
        self.pool_layers, self.input_names, self.layers = pool_layers, tuple(input_names), layers

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.pool_layers(dict(zip(self.input_names, inputs)), self.layers))


class OnnxForward:
    """ONNX Runtime sessions of one model, one per (variant, layers); ``run`` is safe to call from many threads."""

    def __init__(self, model_hash: str, variant: str = "fp32", cache_dir: Path | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
        import onnxruntime  # noqa: F401  (fail here, at load, when the runtime is missing)

        self.variant = variant
        self.folder = (cache_dir or onnx_cache_root()) / f"{model_hash}-g{GRAPH_VERSION}"
        self._sessions: dict[tuple[int, ...], object] = {}
        self._lock = threading.Lock()

    def run(
        self, features: dict[str, torch.Tensor], layers: tuple[int, ...], export: Callable[[Path], None]
    ) -> list[np.ndarray]:
        """Pooled embeddings at ``layers`` for one tokenized batch; ``export(path)`` writes the fp32 graph when it
        is not cached yet."""
        names = sorted(features)
        session = self._session(layers, export)
        outputs = session.run(None, {name: features[name].numpy() for name in names})
        return [np.asarray(out, dtype=np.float32) for out in outputs]

    def _session(self, layers: tuple[int, ...], export: Callable[[Path], None]):
        session = self._sessions.get(layers)
        if session is not None:
            return session
        with self._lock:
            if layers not in self._sessions:
                self._sessions[layers] = self._open(self._graph(layers, export))
            return self._sessions[layers]

    def _graph(self, layers: tuple[int, ...], export: Callable[[Path], None]) -> Path:
        key = "-".join(map(str, layers))
        fp32 = self.folder / f"fp32-L{key}.onnx"
        if not fp32.exists():
            _write_atomically(fp32, export)
        if self.variant == "fp32":
            return fp32
        int8 = self.folder / f"int8-L{key}.onnx"
        if not int8.exists():
            _write_atomically(int8, lambda tmp: _quantize(fp32, tmp))
        return int8

    @staticmethod
    def _open(path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_pooled_layers(
    model: torch.nn.Module,
    pool_layers: Callable,
    example: dict[str, torch.Tensor],
    check: dict[str, torch.Tensor],
    layers: tuple[int, ...],
    path: Path,
) -> None:
    """Trace ``pool_layers(example, layers)``, which runs ``model``, into an ONNX graph with dynamic batch and
    sequence axes, then run the graph on ``check`` (another batch, with padding) and compare it with torch.

    ``model`` must have no parametrized weights (ONNX has no matrix exponential): ``Embedder`` exports a copy with
    plain ones. Tracing freezes data-dependent branches (transformers skips the attention mask of a batch without padding), so
    the example must have padding and the check refuses a graph that does not generalise."""
    names = sorted(example)
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    outputs = [f"layer_{layer}" for layer in layers]
    axes.update({name: {0: "batch"} for name in outputs})
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _PooledLayers(model, pool_layers, names, layers).eval(),  # export restores the wrapper's mode after
            tuple(example[name] for name in names),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
        expected = [t.numpy() for t in pool_layers(check, layers)]
    got = OnnxForward._open(path).run(None, {name: check[name].numpy() for name in names})
    for layer, want, have in zip(layers, expected, got):
        if not np.allclose(want, have, atol=1e-4):
            raise RuntimeError(
                f"the exported graph differs from torch at layer {layer} by {np.abs(want - have).max():.2g} "
                "(a data-dependent branch the trace froze)"
            )


def _quantize(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint for image models on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".onnx")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
