"""Training losses for nested (layer, dim) embeddings that sentence-transformers does not have.

One module per loss: ``starbucks`` (SRL), ``matryoshka_2d_paper`` (2DMSE's own four-term step), ``smae``
(Starbucks masked auto-encoding pre-training); ``layers`` holds their shared one-pass nested embeddings.
MatryoshkaLoss and Matryoshka2dLoss come from sentence-transformers as they are.
"""

from telescope.embedder.losses.matryoshka_2d_paper import Matryoshka2dPaperLoss
from telescope.embedder.losses.smae import StarbucksMAELoss
from telescope.embedder.losses.starbucks import StarbucksLoss

__all__ = ["Matryoshka2dPaperLoss", "StarbucksLoss", "StarbucksMAELoss"]
