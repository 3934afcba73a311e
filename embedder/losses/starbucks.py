"""Starbucks Representation Learning (SRL): every fixed (layer, dim) pair, every step, from one forward pass.

    loss = sum_{(l, d) in pairs} w_(l,d) * L(e(l, d))
         + w_kl * sum_{(l, d) != (L, D)} KL( softmax(S_(L,D) / t).detach() || softmax(S_(l,d) / t) )

``L`` is the base loss (MultipleNegativesRankingLoss for pairs/triplets, CoSENTLoss for scored pairs), called
through its ``compute_loss_from_embeddings`` on the re-normalised prefixes ``e(l, d)``; ``S`` are the in-batch
query-document cosine score matrices; the full-size scores are the detached teacher. Uniform weights by
default, as in the paper. Not in sentence-transformers (its Matryoshka2dLoss samples one layer and one dim per
step and its KL is over embedding coordinates), hence this module.

Paper: Zhuang, Koopman, Zuccon et al., "Starbucks: Improved Training for 2D Matryoshka Embeddings", 2024
(arXiv:2410.13230).

Relations: :class:`MatryoshkaLoss` is the one-layer case with no KL; :class:`Matryoshka2dLoss` samples instead
of summing; :class:`telescope.embedder.losses.matryoshka_2d_paper.Matryoshka2dPaperLoss` is 2DMSE's own
four-term step. With multi-layer trainable pooling, ``e(l, d)`` pools over layers 1..l.

Example::

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from telescope.embedder.losses.starbucks import StarbucksLoss

    model = SentenceTransformer("path/to/all-MiniLM-L6-v2")
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model),
                         pairs=[(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)],
                         kl_weight=1.0, kl_temperature=0.05)
    # then SentenceTransformerTrainer(model=model, train_dataset=pairs, loss=loss).train()

Inputs: whatever the base loss takes ((anchor, positive[, negative]) for MNRL; (s1, s2) + score for CoSENT).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from telescope.embedder.losses.layers import check_pairs, nested_embeddings, num_layers, score_kl


class StarbucksLoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        loss: nn.Module,
        pairs: Sequence[tuple[int, int]],
        pair_weights: Sequence[float] | None = None,
        kl_weight: float = 1.0,
        kl_temperature: float = 0.05,
    ) -> None:
        """
        Args:
            model: the SentenceTransformer being trained (Transformer, then a pooling module).
            loss: the base loss; must have ``compute_loss_from_embeddings(embeddings, labels)``.
            pairs: the (layer, dim) pairs trained every step, e.g. (1,16) .. (6,384).
            pair_weights: one weight per pair; default all 1 (the paper's uniform weights).
            kl_weight: weight of the score-distribution KL term; 0 turns it off.
            kl_temperature: softmax temperature of the KL term; > 0. Default 0.05 = 1 / MNRL's scale 20, so the
                teacher distribution is as peaked as the one the base loss trains.
        """
        super().__init__()
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise ValueError(
                f"loss: expected a base loss with compute_loss_from_embeddings, got {type(loss).__name__}"
            )
        self.model = model
        self.loss = loss
        self.pairs = check_pairs(pairs, model)
        self.full = (num_layers(model), int(model.get_embedding_dimension()))
        if pair_weights is None:
            pair_weights = [1.0] * len(self.pairs)
        if len(pair_weights) != len(self.pairs):
            raise ValueError(f"pair_weights: expected {len(self.pairs)} weights (one per pair), got {len(pair_weights)}")
        if not all(w >= 0 for w in pair_weights):  # `not >=`: NaN is refused too
            raise ValueError(f"pair_weights: expected weights >= 0, got {list(pair_weights)}")
        self.pair_weights = [float(w) for w in pair_weights]
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight: expected >= 0 (0 turns the KL term off), got {kl_weight}")
        if not kl_temperature > 0:
            raise ValueError(f"kl_temperature: expected > 0, got {kl_temperature}")
        if not any(self.pair_weights) and not (kl_weight and any(p != self.full for p in self.pairs)):
            raise ValueError(
                f"pair_weights: expected at least one weight > 0 (or a KL term), got {self.pair_weights} "
                f"with kl_weight={kl_weight}"
            )
        self.kl_weight = float(kl_weight)
        self.kl_temperature = float(kl_temperature)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        sentence_features = list(sentence_features)
        points = list(dict.fromkeys([*self.pairs, self.full]))
        embeddings = nested_embeddings(self.model, sentence_features, points)
        loss = 0.0
        for pair, weight in zip(self.pairs, self.pair_weights):
            if weight:
                loss = loss + weight * self.loss.compute_loss_from_embeddings(embeddings[pair], labels)
        if self.kl_weight > 0 and len(sentence_features) > 1:
            teacher = embeddings[self.full]
            for pair in self.pairs:
                if pair != self.full:
                    loss = loss + self.kl_weight * score_kl(embeddings[pair], teacher, self.kl_temperature)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": type(self.loss).__name__,
            "pairs": [list(p) for p in self.pairs],
            "pair_weights": self.pair_weights,
            "kl_weight": self.kl_weight,
            "kl_temperature": self.kl_temperature,
        }

    @property
    def citation(self) -> str:
        return """
@misc{zhuang2024starbucks,
    title={Starbucks: Improved Training for 2D Matryoshka Embeddings},
    author={Shengyao Zhuang and Shuai Wang and Bevan Koopman and Guido Zuccon},
    year={2024},
    eprint={2410.13230},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""
