"""Embedding throughput: telescope's encode against plain sentence-transformers encode, and early exit per layer.

Both run on the same texts in the same process, interleaved (telescope, plain, telescope, plain, ...) so machine
noise hits both alike; figures are medians. Early exit: encode time at layers 1..L relative to L (only the first
``layer`` blocks run, so the ratio should approach layer / L plus the fixed cost of tokenising and embedding).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from telescope.embedder import Embedder


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_embed(embedder: Embedder, texts: Sequence[str], batch_size: int = 64, repeats: int = 3) -> dict:
    texts = list(texts)
    plain = lambda: embedder.model.encode(texts, batch_size=batch_size, convert_to_numpy=True)  # noqa: E731
    ours = lambda: embedder.encode(texts, batch_size=batch_size)  # noqa: E731
    ours()  # warm-up (allocations, thread pools)
    ours_t, plain_t = [], []
    for _ in range(repeats):
        ours_t.append(median_seconds(ours, 1))
        plain_t.append(median_seconds(plain, 1))
    layers = {}
    for layer in range(1, embedder.num_layers + 1):
        layers[layer] = median_seconds(lambda: embedder.encode(texts, layer=layer, batch_size=batch_size), repeats)
    full = layers[embedder.num_layers]
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "repeats": repeats,
        "telescope_s": float(np.median(ours_t)),
        "sentence_transformers_s": float(np.median(plain_t)),
        "telescope_texts_per_s": len(texts) / float(np.median(ours_t)),
        "sentence_transformers_texts_per_s": len(texts) / float(np.median(plain_t)),
        "speed_ratio": float(np.median(plain_t)) / float(np.median(ours_t)),
        "early_exit": [
            {"layer": layer, "seconds": s, "relative_to_full": s / full, "texts_per_s": len(texts) / s}
            for layer, s in layers.items()
        ],
    }


def markdown(report: dict) -> str:
    r = report["results"]
    lines = [
        "# Embedding throughput",
        "",
        f"Command: `{report['command']}`  ",
        f"Model: {report['model']['tag']} (hash {report['model']['hash']}); {r['texts']} texts "
        f"({report['data']}), batch {r['batch_size']}, median of {r['repeats']}; "
        f"{report['host']['cpus']} CPUs, torch threads {report['host']['torch_threads']}",
        "",
        "| encoder | texts/s |",
        "|---|---|",
        f"| telescope `Embedder.encode` | {r['telescope_texts_per_s']:,.0f} |",
        f"| sentence-transformers `encode` | {r['sentence_transformers_texts_per_s']:,.0f} |",
        f"| ratio (telescope / plain) | {r['speed_ratio']:.2f}x |",
        "",
        "## Early exit",
        "",
        "| layers run | seconds | relative to all layers | texts/s |",
        "|---|---|---|---|",
    ]
    for row in r["early_exit"]:
        lines.append(f"| {row['layer']} | {row['seconds']:.2f} | {row['relative_to_full']:.2f} | {row['texts_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"
