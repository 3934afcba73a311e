"""The BT^2 head: orthogonal basis transforms that turn a new model's features into ``[b ; a]``.

Zhou, Li, Shrivastava, Zhao, Torralba, Tian, Lim, "BT^2: Backward-compatible Training with Basis
Transformation", ICCV 2023 (arXiv:2211.03989). A basis transformation is a learned orthogonal matrix: it keeps
all the information of its input (``|Qx| = |x|``, invertible), so the old-compatible part does not have to be
carved out of the new features at their expense; extra dimensions carry what does not fit the old space.

For a pooled sentence vector ``p`` (the new model's features, dim ``D``)::

    f = p / |p|                                       the new features (aligned to the independent new model)
    c = W_c p + w                                     a learned compatibility branch (``extra`` dims)
    z = [ c / |c| ; Q_new (s * f) ]                   Q_new: D x D orthogonal, s = ``scale``
    b = Q_old z[:old_dim]                             Q_old: old_dim x old_dim orthogonal
    a = z[old_dim:]                                   D + extra - old_dim dims
    output = [b ; a]                                  D + extra dims (Normalize, the next module, makes it unit)

``b`` (the first ``old_dim`` coordinates, re-normalised) is compared with old vectors; the whole vector with new
ones. With ``D = old_dim`` the extra dims are ``extra`` (the paper's +25%). ``scale`` weighs the new features
against the compatibility branch inside ``z`` (3, as the paper's released code does). The orthogonal matrices
use ``torch.nn.utils.parametrizations.orthogonal`` (matrix exponential).

**Start.** The paper trains from scratch; here the new model is a pretrained text encoder that may already be
partly comparable with the old one (a deeper model of the same family, say). Starting at identity matrices
would put ``c`` in b's first coordinates and shift the new features by ``extra`` positions, destroying that (a
first run measured STS-B new/old 3.8 against 51.9 for the untouched new model). So the head starts where
``b = [s f[:old_dim - extra] ; c / |c|]`` with ``c`` reading the pooled vector's coordinates
``old_dim - extra .. old_dim`` (``W_c`` a selection, ``Q_old`` a cyclic shift, ``Q_new`` the identity): b starts
close to the new features themselves, coordinate for coordinate, and training moves it toward the old space.

sentence-transformers has no such module, hence this one. It sits after Pooling (before Normalize), saves and
reloads with the folder (``modules.json`` names this class; ``load_embedder`` allows telescope's own modules).

Example::

    from telescope.embedder.basis_transform import attach_basis_transform
    model = attach_basis_transform(SentenceTransformer("path/to/new-model"), old_dim=384)   # 384 -> 480 dims
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from telescope.embedder.trainable_module import TrainableModule

DEFAULT_EXTRA_FRACTION = 0.25


def _orthogonal_identity(dim: int) -> nn.Linear:
    return _orthogonal_start(dim, shift=0)


def _orthogonal_start(dim: int, shift: int) -> nn.Linear:
    """An orthogonal ``dim x dim`` linear map starting as the cyclic shift ``y[i] = x[(i + shift) % dim]``."""
    linear = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.roll(torch.eye(dim), shifts=shift, dims=1))
    return orthogonal(linear)


class BasisTransform(TrainableModule):
    config_keys: list[str] = ["input_dim", "old_dim", "extra_dim", "scale"]

    def __init__(self, input_dim: int, old_dim: int, extra_dim: int, scale: float = 3.0) -> None:
        """
        Args:
            input_dim: D, the pooled vector's dim (the new model's hidden size).
            old_dim: the old model's dim: the length of the compatible prefix ``b``.
            extra_dim: dims added to D (the paper: 25% of the old dim); >= 1 and ``old_dim <= D + extra_dim``.
            scale: weight of the new features against the compatibility branch in ``z``; > 0.
        """
        super().__init__()
        for name, value in (("input_dim", input_dim), ("old_dim", old_dim), ("extra_dim", extra_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if old_dim > input_dim + extra_dim:
            raise ValueError(
                f"old_dim: expected at most input_dim + extra_dim = {input_dim + extra_dim}, got {old_dim}"
            )
        if not scale > 0:
            raise ValueError(f"scale: expected > 0, got {scale!r}")
        self.input_dim, self.old_dim, self.extra_dim, self.scale = input_dim, old_dim, extra_dim, float(scale)
        self.compat = nn.Linear(input_dim, extra_dim)
        self.rotate_new = _orthogonal_identity(input_dim)
        self.rotate_old = _orthogonal_start(old_dim, shift=min(extra_dim, old_dim))
        start = max(0, min(old_dim, input_dim) - extra_dim)
        with torch.no_grad():  # c starts as the pooled coordinates that b's last `extra` positions hold
            self.compat.weight.zero_()
            self.compat.bias.zero_()
            rows = torch.arange(min(extra_dim, input_dim - start))
            self.compat.weight[rows, start + rows] = 1.0

    def forward(self, features: dict[str, Tensor], **kwargs) -> dict[str, Tensor]:
        pooled = features["sentence_embedding"]
        c = F.normalize(self.compat(pooled), dim=-1)
        z = torch.cat([c, self.rotate_new(self.scale * F.normalize(pooled, dim=-1))], dim=-1)
        b = self.rotate_old(z[:, : self.old_dim])
        features["new_features"] = pooled
        features["sentence_embedding"] = torch.cat([b, z[:, self.old_dim :]], dim=-1)
        return features

    def get_embedding_dimension(self) -> int:
        return self.input_dim + self.extra_dim


def default_extra_dim(old_dim: int) -> int:
    """The paper's +25% of the old dim (at least 1)."""
    return max(1, round(DEFAULT_EXTRA_FRACTION * old_dim))


def attach_basis_transform(
    model: SentenceTransformer, old_dim: int, extra_dim: int | None = None, scale: float = 3.0
) -> SentenceTransformer:
    """Insert a fresh :class:`BasisTransform` after the model's pooling module (index 1)."""
    if len(model) < 2:
        raise ValueError(f"model: expected Transformer then a pooling module, got {[type(m).__name__ for m in model]}")
    if any(isinstance(m, BasisTransform) for m in model):
        raise ValueError("model: it already has a BasisTransform head (train BT^2 from the independent new model)")
    input_dim = int(model[1].get_embedding_dimension())
    head = BasisTransform(input_dim, old_dim, extra_dim or default_extra_dim(old_dim), scale)
    head = head.to(next(model.parameters()).device)
    modules = list(model)
    modules.insert(2, head)
    rebuilt = SentenceTransformer(modules=modules, device=str(next(model.parameters()).device))
    rebuilt.max_seq_length = model.max_seq_length
    return rebuilt
