"""Multi-layer trainable pooling (MLTP): learned latents cross-attend over one vector per transformer layer.

Tang and Yang, 2024, "Pooling And Attention: What Are Effective Designs For LLM-Based Embedding Models?"
(arXiv:2409.02727). For a bidirectional encoder:

    v_k  = masked_mean_tokens(h_k) + P[k]                      k = 1 .. l   (P: learned layer positions)
    z    = Q + CrossAttn(LN(Q), LN(v_1..v_l))                   Q: N learned latents (N x H)
    z    = z + GEGLU_FFN(LN(z))
    out  = mean_tokens(h_l) + W_o mean_n(z)                    W_o starts at zero
    (Normalize, the next module, makes it unit length.)

Two deliberate departures from the paper's head, both for fine-tuning a small pretrained mean-pooled model
for a few hundred steps: (1) a residual from the mean-pooled deepest layer and a zero-initialised output
projection ``W_o``, so a freshly attached head *is* mean pooling (a trained model loses nothing on step 0 and
learns only what helps); (2) its own, larger learning rate (``telescope train --head-lr``).

**Fewer layers.** Encoding at layer ``l`` (early exit: only ``l`` blocks run) gives this module the hidden
states ``h_0 .. h_l``; it attends over the layer vectors ``v_1 .. v_l`` only (layer positions stay those of the
full model) and its residual is ``mean(h_l)``. So ``e(l, d)`` with MLTP is a function of the first ``l``
layers, exactly what early exit computed; Starbucks/2DMSE training teaches the head every such prefix. When the
features carry all hidden states but ``token_embeddings`` is one of them (sentence-transformers'
``AdaptiveLayerLoss`` / ``Matryoshka2dLoss`` hand a shallow layer that way), the layer is taken from it, so
those losses train the same prefixes. With ``l = 0`` it reads the embedding output.

Why here: sentence-transformers has only ``WeightedLayerPooling`` (static layer weights over token states).

Example::

    from telescope.embedder.pooling_mltp import attach_mltp
    model = attach_mltp(SentenceTransformer("path/to/all-MiniLM-L6-v2"), num_latents=32, num_heads=6)
    model.save("out")   # reloads with SentenceTransformer("out"); modules.json names this class
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from telescope.embedder.trainable_module import TrainableModule


class MultiLayerTrainablePooling(TrainableModule):
    config_keys: list[str] = ["embedding_dimension", "num_hidden_layers", "num_latents", "num_heads", "ffn_mult"]

    def __init__(
        self,
        embedding_dimension: int,
        num_hidden_layers: int,
        num_latents: int = 32,
        num_heads: int = 6,
        ffn_mult: int = 2,
    ) -> None:
        """
        Args:
            embedding_dimension: the transformer's hidden size H (= the output dim).
            num_hidden_layers: the transformer's depth L (layer positions 0..L are learned).
            num_latents: N learned latent queries (16-64 for MiniLM).
            num_heads: attention heads; must divide H (MiniLM: 6 heads of 64).
            ffn_mult: GEGLU hidden width as a multiple of H.
        """
        super().__init__()
        for name, value, low in (
            ("embedding_dimension", embedding_dimension, 1),
            ("num_hidden_layers", num_hidden_layers, 1),
            ("num_latents", num_latents, 1),
            ("num_heads", num_heads, 1),
            ("ffn_mult", ffn_mult, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if embedding_dimension % num_heads:
            raise ValueError(
                f"num_heads: expected a divisor of embedding_dimension {embedding_dimension}, got {num_heads}"
            )
        self.embedding_dimension = embedding_dimension
        self.num_hidden_layers = num_hidden_layers
        self.num_latents = num_latents
        self.num_heads = num_heads
        self.ffn_mult = ffn_mult
        h = embedding_dimension
        self.layer_position = nn.Embedding(num_hidden_layers + 1, h)
        nn.init.normal_(self.layer_position.weight, std=0.02)
        self.latents = nn.Parameter(torch.randn(num_latents, h) * 0.02)
        self.norm_q = nn.LayerNorm(h)
        self.norm_kv = nn.LayerNorm(h)
        self.attention = nn.MultiheadAttention(h, num_heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(h)
        self.ffn_in = nn.Linear(h, 2 * ffn_mult * h)
        self.ffn_out = nn.Linear(ffn_mult * h, h)
        self.out = nn.Linear(h, h)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def layer_of(features: dict[str, Any]) -> int:
        """How many blocks the hidden states in ``features`` cover (see the module docstring)."""
        hidden = features["all_layer_embeddings"]
        token = features.get("token_embeddings")
        for k, h in enumerate(hidden):
            if h is token:
                return k
        return len(hidden) - 1

    def forward(self, features: dict[str, Tensor], **kwargs) -> dict[str, Tensor]:
        if "all_layer_embeddings" not in features:
            raise ValueError(
                "features: multi-layer trainable pooling needs all_layer_embeddings; set the Transformer's "
                "auto_model.config.output_hidden_states = True (attach_mltp does)"
            )
        hidden = features["all_layer_embeddings"]
        layer = self.layer_of(features)
        mask = features["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
        denom = mask.sum(1).clamp(min=1e-9)
        indices = list(range(1, layer + 1)) or [0]
        vectors = torch.stack([(hidden[k] * mask).sum(1) / denom for k in indices], dim=1)  # (B, l, H)
        positions = self.layer_position(torch.tensor(indices, device=vectors.device))
        kv = self.norm_kv(vectors + positions)
        q = self.latents.unsqueeze(0).expand(vectors.size(0), -1, -1)
        attended, _ = self.attention(self.norm_q(q), kv, kv, need_weights=False)
        z = q + attended
        a, b = self.ffn_in(self.norm_ffn(z)).chunk(2, dim=-1)
        z = z + self.ffn_out(a * F.gelu(b))
        residual = vectors[:, -1] if layer > 0 else (hidden[0] * mask).sum(1) / denom
        features["sentence_embedding"] = residual + self.out(z.mean(dim=1))
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension


def default_heads(hidden: int) -> int:
    """Heads of 64 dims where they divide H (MiniLM 384 -> 6), else the largest divisor of H up to 8."""
    if hidden % 64 == 0 and 4 <= hidden // 64 <= 8:
        return hidden // 64
    return max(h for h in range(1, 9) if hidden % h == 0)


def attach_mltp(
    model: SentenceTransformer, num_latents: int = 32, num_heads: int | None = None, ffn_mult: int = 2
) -> SentenceTransformer:
    """Replace the model's Pooling module (index 1) with a fresh MLTP head; keep the modules after it.

    Sets the Transformer's ``output_hidden_states`` so a plain ``model.encode`` feeds the head all layers; the
    setting is saved in the Transformer's config.json, so a reloaded model works the same.
    """
    from sentence_transformers.sentence_transformer.modules import Pooling

    if len(model) < 2 or not isinstance(model[1], Pooling):
        raise ValueError(f"model: expected Transformer then Pooling to replace, got {[type(m).__name__ for m in model]}")
    auto = model[0].auto_model
    hidden, depth = int(auto.config.hidden_size), int(auto.config.num_hidden_layers)
    head = MultiLayerTrainablePooling(
        hidden, depth, num_latents=num_latents, num_heads=num_heads or default_heads(hidden), ffn_mult=ffn_mult
    ).to(next(model.parameters()).device)
    auto.config.output_hidden_states = True
    modules = list(model)
    modules[1] = head
    rebuilt = SentenceTransformer(modules=modules, device=str(next(model.parameters()).device))
    rebuilt.max_seq_length = model.max_seq_length
    return rebuilt
