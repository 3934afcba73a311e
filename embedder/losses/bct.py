"""BCT: backward-compatible training with an influence loss only, the baseline BT^2 is measured against.

    loss = w_new * L(new(x), new(y)) + w_influence * L(new(x), old(y))

The new model's whole vector (same dim as the old model's, no extra dimensions, no basis transform) must rank
the batch's documents both among its own vectors and among the frozen old model's vectors. ``L`` is the base
contrastive loss (MultipleNegativesRankingLoss). The influence term is the text form of BCT's loss through the
old classifier.

Paper: Shen, Xiong, Xia, Soatto, "Towards Backward-Compatible Representation Learning", CVPR 2020
(arXiv:2003.11942); the baseline of Zhou et al., "BT^2", ICCV 2023, which reports that it costs the new model
quality (new/new) and gains little new/old.

Relations: it is :class:`telescope.embedder.losses.bt2.BT2Loss` with both alignment weights 0 on a model
without a :class:`~telescope.embedder.basis_transform.BasisTransform` head; the same code computes it.

Example::

    old = SentenceTransformer("models/old")
    model = SentenceTransformer("models/new")          # same dim as old
    loss = BCTLoss(model, MultipleNegativesRankingLoss(model), old)

Inputs: (anchor, positive[, negative]) texts.
"""

from __future__ import annotations

from sentence_transformers import SentenceTransformer
from torch import nn

from telescope.embedder.losses.bt2 import BT2Loss


class BCTLoss(BT2Loss):
    def __init__(
        self,
        model: SentenceTransformer,
        loss: nn.Module,
        old_model: SentenceTransformer,
        new_weight: float = 1.0,
        influence_weight: float = 10.0,
    ) -> None:
        """
        Args:
            model: the model being trained: its vector has the old model's dim.
            loss: the base contrastive loss (``compute_loss_from_embeddings``).
            old_model: the frozen old model.
            new_weight: weight of the new-new contrastive loss; >= 0 (0: the influence loss alone).
            influence_weight: weight of the cross-model contrastive loss; > 0.
        """
        new_dim, old_dim = int(model.get_embedding_dimension()), int(old_model.get_embedding_dimension())
        if new_dim != old_dim:
            raise ValueError(
                f"old_model: BCT needs the new and old vectors to have one dim, got old {old_dim}, new {new_dim} "
                "(use BT2Loss to add dimensions)"
            )
        if not influence_weight > 0:
            raise ValueError(f"influence_weight: expected > 0 (it is the BCT term), got {influence_weight!r}")
        super().__init__(model, loss, old_model, None, new_weight, influence_weight, 0.0, 0.0)
