"""Starbucks Masked Auto-Encoding (SMAE): 2D-Matryoshka continued pre-training of the encoder.

For a batch of texts, mask a fraction of the tokens for the encoder (BERT's 80/10/10 rule, via transformers'
``DataCollatorForLanguageModeling``) and run it once with all hidden states. Then for every (layer, dim) pair:

    MLM(l, d) = CE( head([h_l[:, :, :d] ; 0]), masked tokens )          the MLM head reads the first d dims
    MAE(l, d) = CE( head(Dec([s(l, d) ; 0], emb(x~))), decoder-masked tokens )
    loss = sum_{(l, d)} ( MLM(l, d) + w_mae * MAE(l, d) )

``s(l, d)`` is the model's own sentence vector at (l, d) (its pooling of h_l, first d dims, zero-padded to H:
the CLS vector of the paper's BERT, the mean-pooled vector of a mean-pooled model), put in place of the first
token of a second, more heavily masked copy ``x~`` of the input; ``Dec`` is one transformer layer whose other
inputs are the encoder's (shared) word+position embeddings of ``x~``. The decoder can only recover the masked
tokens through ``s(l, d)``, which makes the small sentence vectors informative. The MLM head (transform +
vocabulary projection tied to the word embeddings) and the decoder belong to this loss, are trained with it and
thrown away: the output is an ordinary sentence-transformers model, a base for ``StarbucksLoss`` fine-tuning.

Paper: Zhuang et al., "Starbucks: Improved Training for 2D Matryoshka Embeddings", 2024 (arXiv:2410.13230),
SMAE; the decoder follows RetroMAE (Xiao et al., EMNLP 2022). Not in sentence-transformers (its
``DenoisingAutoEncoderLoss`` decodes from the full vector only), hence this module.

Example::

    loss = StarbucksMAELoss(model, pairs=[(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)])
    # dataset: one column of raw texts; SentenceTransformerTrainer(model, train_dataset=texts, loss=loss)

Inputs: one text column; no labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn
from transformers import DataCollatorForLanguageModeling

from telescope.embedder.losses.layers import check_pairs, pool_layer, transformer_with_hidden_states


class StarbucksMAELoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        pairs: Sequence[tuple[int, int]],
        encoder_mask: float = 0.3,
        decoder_mask: float = 0.5,
        mae_weight: float = 1.0,
        decoder_heads: int | None = None,
    ) -> None:
        """
        Args:
            model: the SentenceTransformer to pre-train (a BERT-like Transformer, then pooling).
            pairs: the (layer, dim) pairs trained every step.
            encoder_mask: fraction of tokens masked for the encoder, in (0, 1).
            decoder_mask: fraction of tokens masked in the decoder's copy, in (0, 1).
            mae_weight: weight of the auto-encoding term; 0 leaves MLM only.
            decoder_heads: attention heads of the decoder layer (default: those of the encoder).
        """
        super().__init__()
        self.model = model
        self.pairs = check_pairs(pairs, model)
        for name, value in (("encoder_mask", encoder_mask), ("decoder_mask", decoder_mask)):
            if not 0 < value < 1:
                raise ValueError(f"{name}: expected a fraction in (0, 1), got {value}")
        if mae_weight < 0:
            raise ValueError(f"mae_weight: expected >= 0, got {mae_weight}")
        self.encoder_mask, self.decoder_mask, self.mae_weight = float(encoder_mask), float(decoder_mask), float(mae_weight)
        auto = model[0].auto_model
        config = auto.config
        self.hidden = int(config.hidden_size)
        heads = decoder_heads or int(config.num_attention_heads)
        if self.hidden % heads:
            raise ValueError(f"decoder_heads: expected a divisor of the hidden size {self.hidden}, got {heads}")
        embeddings = auto.get_input_embeddings()
        self.head_transform = nn.Sequential(
            nn.Linear(self.hidden, self.hidden), nn.GELU(), nn.LayerNorm(self.hidden, eps=config.layer_norm_eps)
        )
        self.head_bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))
        self.decoder = nn.TransformerEncoderLayer(
            self.hidden, heads, dim_feedforward=int(config.intermediate_size), dropout=0.1,
            activation="gelu", batch_first=True,
        )
        tokenizer = model.tokenizer
        self.collator_encoder = DataCollatorForLanguageModeling(tokenizer, mlm_probability=self.encoder_mask)
        self.collator_decoder = DataCollatorForLanguageModeling(tokenizer, mlm_probability=self.decoder_mask)

    def _logits(self, states: Tensor, dim: int) -> Tensor:
        """The MLM head on the first ``dim`` dims (zero-padded: dense(x[:d]) uses W[:, :d] only)."""
        first = self.head_transform[0]
        x = F.linear(states[..., :dim], first.weight[:, :dim], first.bias)
        x = self.head_transform[2](self.head_transform[1](x))
        word = self.model[0].auto_model.get_input_embeddings().weight  # tied vocabulary projection
        return F.linear(x, word, self.head_bias)

    def _mask(self, collator: DataCollatorForLanguageModeling, ids: Tensor, attention: Tensor) -> tuple[Tensor, Tensor]:
        special = torch.isin(ids, torch.tensor(collator.tokenizer.all_special_ids, device=ids.device)) | (attention == 0)
        masked, labels = collator.torch_mask_tokens(ids.clone().cpu(), special_tokens_mask=special.cpu())
        return masked.to(ids.device), labels.to(ids.device)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        if len(features) != 1:
            raise ValueError(f"inputs: StarbucksMAELoss expects one text column, got {len(features)}")
        features = features[0]
        ids, attention = features["input_ids"], features["attention_mask"]
        enc_ids, enc_labels = self._mask(self.collator_encoder, ids, attention)
        out = transformer_with_hidden_states(self.model, {**features, "input_ids": enc_ids})
        hidden = out["all_layer_embeddings"]
        enc_positions = enc_labels != -100

        dec_ids, dec_labels = self._mask(self.collator_decoder, ids, attention)
        dec_labels[:, 0] = -100  # the first position carries the sentence vector
        dec_positions = dec_labels != -100
        embed = self.model[0].auto_model.embeddings
        dec_inputs = embed(input_ids=dec_ids)  # word + position (+ type) embeddings, LayerNorm
        pad = attention == 0

        loss = hidden[0].new_zeros(())
        pooled = {layer: pool_layer(self.model, out, layer) for layer in {l for l, _ in self.pairs}}
        for layer, dim in self.pairs:
            if enc_positions.any():
                logits = self._logits(hidden[layer][enc_positions], dim)
                loss = loss + F.cross_entropy(logits, enc_labels[enc_positions])
            if self.mae_weight > 0 and dec_positions.any():
                sentence = F.pad(pooled[layer][:, :dim], (0, self.hidden - dim))
                x = torch.cat([sentence.unsqueeze(1), dec_inputs[:, 1:]], dim=1)
                decoded = self.decoder(x, src_key_padding_mask=pad)
                logits = self._logits(decoded[dec_positions], self.hidden)
                loss = loss + self.mae_weight * F.cross_entropy(logits, dec_labels[dec_positions])
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "pairs": [list(p) for p in self.pairs],
            "encoder_mask": self.encoder_mask,
            "decoder_mask": self.decoder_mask,
            "mae_weight": self.mae_weight,
        }

    def head_state_dict(self) -> dict[str, Tensor]:
        """This loss's own parameters (MLM head transform, bias, decoder): saved with checkpoints for resuming."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

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
