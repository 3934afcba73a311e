"""Embedding throughput: telescope's encode on each backend against plain sentence-transformers encode, the
quality each backend keeps, and the early-exit speed-up per layer.

Every encoder runs on the same texts in the same process, interleaved round by round (plain, torch, onnx,
onnx-int8, plain, ...) so that machine noise hits all alike; figures are medians over the rounds. Quality: STS-B
dev Spearman x100 at chosen (layer, dim) points per backend (dev split: the speed/quality trade is chosen there,
never on test). Early exit: encode time at layers 1..L relative to L on the first backend (only the first
``layer`` blocks run, so the ratio approaches layer / L plus the fixed cost of tokenising and embedding).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from telescope.embedder import Embedder
from telescope.eval.datasets import StsData
from telescope.eval.sts import evaluate_sts

PLAIN = "sentence-transformers"


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_embed(
    embedders: dict[str, Embedder],
    texts: Sequence[str],
    batch_size: int = 64,
    repeats: int = 3,
    sts_dev: StsData | None = None,
    sts_points: Sequence[tuple[int, int]] = ((6, 384), (3, 64)),
) -> dict:
    """Throughput of plain sentence-transformers and of every ``embedders`` backend, quality per backend, and the
    early-exit times of the first backend."""
    texts = list(texts)
    first = next(iter(embedders.values()))
    encoders: dict[str, Callable[[], object]] = {
        PLAIN: lambda: first.model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    }
    for name, embedder in embedders.items():
        encoders[name] = lambda e=embedder: e.encode(texts, batch_size=batch_size)
    for fn in encoders.values():  # warm-up: allocations, thread pools, ONNX graph export
        fn()
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(repeats):
        for name, fn in encoders.items():
            times[name].append(seconds(fn))
    plain = float(np.median(times[PLAIN]))
    rows = [
        {
            "encoder": name,
            "seconds": float(np.median(t)),
            "texts_per_s": len(texts) / float(np.median(t)),
            "speed_vs_plain": plain / float(np.median(t)),
        }
        for name, t in times.items()
    ]
    quality = {}
    if sts_dev is not None:
        points = [p for p in sts_points if p[0] <= first.num_layers and p[1] <= first.full_dim]
        for name, embedder in embedders.items():
            scores = evaluate_sts(embedder, sts_dev, points, batch_size=batch_size).scores
            quality[name] = {f"{l},{d}": round(s, 2) for (l, d), s in scores.items()}
    layers = {}
    for layer in range(1, first.num_layers + 1):
        layers[layer] = float(np.median([seconds(lambda: first.encode(texts, layer=layer, batch_size=batch_size))
                                         for _ in range(repeats)]))
    full = layers[first.num_layers]
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "repeats": repeats,
        "throughput": rows,
        "sts_dev": quality,
        "early_exit_backend": next(iter(embedders)),
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
        f"({report['data']}), batch {r['batch_size']}, median of {r['repeats']} interleaved rounds; "
        f"{report['host']['cpus']} CPUs, torch threads {report['host']['torch_threads']}, "
        f"load average before {report.get('load_before', 'n/a')}",
        "",
        "| encoder | texts/s | speed vs plain sentence-transformers |",
        "|---|---|---|",
    ]
    for row in r["throughput"]:
        name = row["encoder"] if row["encoder"] == PLAIN else f"telescope, backend `{row['encoder']}`"
        lines.append(f"| {name} | {row['texts_per_s']:,.0f} | {row['speed_vs_plain']:.2f}x |")
    if r["sts_dev"]:
        points = list(next(iter(r["sts_dev"].values())))
        lines += ["", "## Quality kept: STS-B dev Spearman x100", "",
                  "| backend | " + " | ".join(f"({p})" for p in points) + " |",
                  "|---|" + "---|" * len(points)]
        for name, scores in r["sts_dev"].items():
            lines.append(f"| `{name}` | " + " | ".join(f"{scores[p]:.2f}" for p in points) + " |")
    lines += ["", f"## Early exit (backend `{r['early_exit_backend']}`)", "",
              "| layers run | seconds | relative to all layers | texts/s |", "|---|---|---|---|"]
    for row in r["early_exit"]:
        lines.append(f"| {row['layer']} | {row['seconds']:.2f} | {row['relative_to_full']:.2f} | {row['texts_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"
