"""BT^2 training: a new model whose vector ``[b ; a]`` is good on its own and whose prefix ``b`` matches an old model.

    loss = w_new       * L([b;a](x), [b;a](y))                        new-new contrastive, full vector
         + w_influence * L(b(x), old(y))                              cross-model ("influence") contrastive
         + w_old       * mean_t (1 - cos(b(t), old(t)))               alignment of b to the old embedding
         + w_ind       * mean_t (1 - cos(f(t), ind(t)))               alignment of the new features to the
                                                                      independently trained new model

``x`` are the anchors (queries), ``y`` the positives (and negatives) of a batch, ``t`` every text of the batch;
``L`` the base loss (sentence-transformers' MultipleNegativesRankingLoss, called through
``compute_loss_from_embeddings``), so "influence" is the text form of BCT's old-classifier loss: new queries
must rank the *old* vectors of their documents first. ``b`` is the first ``old_dim`` coordinates of the model's
vector, re-normalised; ``f`` the pooled features before the basis transforms
(:class:`telescope.embedder.basis_transform.BasisTransform` exposes them as ``new_features``). The old and the
independent models are frozen (no gradient, not in the optimiser); they must share the trained model's
tokenizer (their inputs are the same token ids).

Paper: Zhou, Li, Shrivastava, Zhao, Torralba, Tian, Lim, "BT^2: Backward-compatible Training with Basis
Transformation", ICCV 2023 (arXiv:2211.03989). Weights default to the paper's 1 / 10 / 5 for
alignment-new / influence / alignment-old, and 1 for the new-new loss. For a pretrained text encoder fine-tuned
a few hundred steps, 30 / 10 / 0 was chosen on STS-B dev and SciFact train queries: new/old above BCT's, and
new/new closest to the independent model. Raising alignment-new trades new/old for new/new; see
docs/results/rollout-ablation.md.

Relations: :class:`telescope.embedder.losses.bct.BCTLoss` is this loss with both alignment terms off and no
basis transform (BCT, Shen et al., CVPR 2020); with ``w_influence = w_old = 0`` it is plain training plus
distillation from the independent model.

Example::

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from telescope.embedder.basis_transform import attach_basis_transform
    from telescope.embedder.losses.bt2 import BT2Loss

    old, independent = SentenceTransformer("models/old"), SentenceTransformer("models/new")
    model = attach_basis_transform(SentenceTransformer("models/new"), old_dim=384)    # 480-dim [b ; a]
    loss = BT2Loss(model, MultipleNegativesRankingLoss(model), old, independent)
    # then SentenceTransformerTrainer(model=model, train_dataset=pairs, loss=loss).train()

Inputs: (anchor, positive[, negative]) texts, as MultipleNegativesRankingLoss takes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn


class BT2Loss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        loss: nn.Module,
        old_model: SentenceTransformer,
        independent_model: SentenceTransformer | None = None,
        new_weight: float = 1.0,
        influence_weight: float = 10.0,
        align_old_weight: float = 5.0,
        align_new_weight: float = 1.0,
    ) -> None:
        """
        Args:
            model: the model being trained; its first ``old_dim`` output coordinates are the compatible part.
            loss: the base contrastive loss; must have ``compute_loss_from_embeddings(embeddings, labels)``.
            old_model: the frozen old model (its vectors fill the index); its dim is ``old_dim``.
            independent_model: the frozen, independently trained new model; needed when ``align_new_weight > 0``.
            new_weight: weight of the new-new contrastive loss on the full vector; >= 0.
            influence_weight: weight of the cross-model contrastive loss of b(query) against old documents; >= 0.
            align_old_weight: weight of the cosine alignment of b to the old embedding; >= 0.
            align_new_weight: weight of the cosine alignment of the new features to the independent model; >= 0.
        """
        super().__init__()
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise ValueError(f"loss: expected a base loss with compute_loss_from_embeddings, got {type(loss).__name__}")
        self.weights = {
            "new": new_weight,
            "influence": influence_weight,
            "align_old": align_old_weight,
            "align_new": align_new_weight,
        }
        for name, value in self.weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}_weight: expected a number >= 0, got {value!r}")
        if not any(self.weights.values()):
            raise ValueError(f"weights: expected at least one weight > 0, got {self.weights}")
        if align_new_weight > 0 and independent_model is None:
            raise ValueError("independent_model: expected a model when align_new_weight > 0, got None")
        self.model = model
        self.loss = loss
        self.old_dim = int(old_model.get_embedding_dimension())
        full = int(model.get_embedding_dimension())
        if self.old_dim > full:
            raise ValueError(f"old_model: expected a dim at most the trained model's {full}, got {self.old_dim}")
        frozen = {"old_model": old_model, "independent_model": independent_model}
        for name, other in frozen.items():
            if other is not None:
                _check_same_tokenizer(model, other, name)
                other.eval().requires_grad_(False)
        # Plain attributes, not submodules: the frozen models stay out of state_dict and the optimiser.
        object.__setattr__(self, "frozen", frozen)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        columns = list(sentence_features)
        outs = [self.model(dict(f)) for f in columns]
        full = [F.normalize(o["sentence_embedding"], dim=-1) for o in outs]
        b = [F.normalize(o["sentence_embedding"][:, : self.old_dim], dim=-1) for o in outs]
        w = self.weights
        loss = torch.zeros((), device=full[0].device)
        if w["new"]:
            loss = loss + w["new"] * self.loss.compute_loss_from_embeddings(full, labels)
        if w["influence"] or w["align_old"]:
            old = self._frozen_embeddings("old_model", columns)
            if w["influence"]:
                loss = loss + w["influence"] * self.loss.compute_loss_from_embeddings([b[0], *old[1:]], labels)
            if w["align_old"]:
                loss = loss + w["align_old"] * _misalignment(b, old)
        if w["align_new"]:
            independent = self._frozen_embeddings("independent_model", columns)
            new_features = [F.normalize(o.get("new_features", o["sentence_embedding"]), dim=-1) for o in outs]
            loss = loss + w["align_new"] * _misalignment(new_features, independent)
        return loss

    def _frozen_embeddings(self, name: str, columns: list[dict[str, Tensor]]) -> list[Tensor]:
        model = self.frozen[name]
        device = next(iter(columns[0].values())).device  # the trainer moves the trained model (a GPU), not these
        if next(model.parameters()).device != device:
            model.to(device)
        with torch.no_grad():
            return [F.normalize(model(dict(f))["sentence_embedding"], dim=-1) for f in columns]

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "old_dim": self.old_dim, **{f"{k}_weight": v for k, v in self.weights.items()}}

    @property
    def citation(self) -> str:
        return """
@inproceedings{zhou2023bt2,
    title={BT^2: Backward-compatible Training with Basis Transformation},
    author={Yifei Zhou and Zilu Li and Abhinav Shrivastava and Hengshuang Zhao and Antonio Torralba and Taipeng Tian and Ser-Nam Lim},
    booktitle={ICCV},
    year={2023}
}
"""


def _misalignment(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Mean of 1 - cos over every text of every column (both sides unit length)."""
    return torch.cat([1 - (s * t).sum(-1) for s, t in zip(student, teacher)]).mean()


def _check_same_tokenizer(model: SentenceTransformer, other: SentenceTransformer, name: str) -> None:
    if model.tokenizer.get_vocab() != other.tokenizer.get_vocab():
        raise ValueError(
            f"{name}: expected the trained model's tokenizer (the same token ids are fed to both), "
            f"got a different vocabulary ({len(other.tokenizer.get_vocab())} vs {len(model.tokenizer.get_vocab())} tokens)"
        )
