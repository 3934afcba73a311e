"""Training losses for nested (layer, dim) embeddings that sentence-transformers does not have.

One module per loss: ``starbucks`` (SRL), ``matryoshka_2d_paper`` (2DMSE's own four-term step), ``smae``
(Starbucks masked auto-encoding pre-training), ``bt2`` (backward-compatible training with basis transformation)
and ``bct`` (its influence-loss baseline); ``layers`` holds the shared one-pass nested embeddings.
MatryoshkaLoss and Matryoshka2dLoss come from sentence-transformers as they are.
"""

from telescope.embedder.losses.bct import BCTLoss
from telescope.embedder.losses.bt2 import BT2Loss
from telescope.embedder.losses.matryoshka_2d_paper import Matryoshka2dPaperLoss
from telescope.embedder.losses.smae import StarbucksMAELoss
from telescope.embedder.losses.starbucks import StarbucksLoss

__all__ = ["BCTLoss", "BT2Loss", "Matryoshka2dPaperLoss", "StarbucksLoss", "StarbucksMAELoss"]
