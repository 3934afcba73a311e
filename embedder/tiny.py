"""A tiny random BERT in sentence-transformers form, built offline in a second: the model tests run on.

Same tokenizer as the packaged default model, a few narrow layers, mean pooling and Normalize, and a manifest
whose pairs nest like the default model's. Its embeddings carry no meaning; its shapes and code paths are real.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from transformers import AutoTokenizer, BertConfig, BertModel

from telescope.embedder.manifest import ModelManifest
from telescope.embedder.model import default_model_path


def build_tiny_model(
    out: str | Path, layers: int = 4, hidden: int = 64, heads: int = 4, max_len: int = 128, seed: int = 0
) -> Path:
    out = Path(out)
    bert_dir = out / "_bert"
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_len,
    )
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = Transformer(str(bert_dir), max_seq_length=max_len)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, pooling_mode="mean"), Normalize()], device="cpu")
    model.save(str(out))
    shutil.rmtree(bert_dir)
    dims = [max(4, hidden >> (layers - layer)) for layer in range(1, layers + 1)]
    ModelManifest(
        id="tiny-bert",
        version="1",
        num_layers=layers,
        full_dim=hidden,
        pairs=list(zip(range(1, layers + 1), dims)),
        objective="random",
    ).save(out)
    return out
