"""``telescope train``: fine-tune (or SMAE pre-train) a nested-embedding model; resumable; writes a model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    objective: Annotated[str, typer.Option(help="plain | mrl | 2dmse | 2dmse-paper | starbucks | starbucks-mae | bt2 | bct | unified")],
    data: Annotated[list[Path], typer.Option(help="Training file (repeatable): pairs/triplets/scored TSV, or text lines for starbucks-mae.")],
    out: Annotated[Path, typer.Option(help="Output model folder (checkpoints under OUT/checkpoints; rerun to resume).")],
    base: Annotated[str, typer.Option(help="'default' (packaged all-MiniLM-L6-v2) or a model folder.")] = "default",
    pooling: Annotated[Optional[str], typer.Option(help="mean | mltp (default: the base model's own pooling).")] = None,
    pairs: Annotated[Optional[str], typer.Option(help="Trained (layer:dim) pairs, e.g. 1:16,2:32 (default: the base's).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (or --epochs).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the data (or --steps).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per step (in-batch negatives for MNRL).")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of data order, sampling and initialisation.")] = 0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the encoder.")] = 2e-5,
    head_lr: Annotated[float, typer.Option(help="Learning rate of fresh heads (MLTP; SMAE's MLM head and decoder; all of --objective unified).")] = 1e-3,
    warmup: Annotated[float, typer.Option(help="Linear warm-up, fraction of the steps.")] = 0.1,
    kl_weight: Annotated[float, typer.Option(help="Weight of the score-distribution KL (starbucks, 2dmse-paper); 0 = off.")] = 1.0,
    kl_temperature: Annotated[float, typer.Option(help="Temperature of that KL.")] = 0.05,
    mltp_latents: Annotated[int, typer.Option(help="MLTP latent queries.")] = 32,
    mltp_heads: Annotated[Optional[int], typer.Option(help="MLTP attention heads (default: H/64).")] = None,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 100,
    max_rows: Annotated[Optional[int], typer.Option(help="Use only the first N rows of each file (after the seeded shuffle).")] = None,
    dev_sts: Annotated[Optional[str], typer.Option(help="STS-B dev TSV for the end-of-training grid ('' skips).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's).")] = None,
    field: Annotated[Optional[list[str]], typer.Option(help="unified: a categorical field, name[:chunks=N][:multi][:sep=S][:column=C] (repeatable).")] = None,
    kind: Annotated[str, typer.Option(help="unified: unified | per_feature | collision_free tables.")] = "unified",
    rows: Annotated[int, typer.Option(help="unified: rows B per hashed table.")] = 4096,
    chunk_dim: Annotated[int, typer.Option(help="unified: chunk width d_c.")] = 16,
    tail_dim: Annotated[int, typer.Option(help="unified: dims of the categorical tail after the text dims.")] = 64,
    old_model: Annotated[Optional[str], typer.Option(help="bt2/bct: the old model (its vectors fill the index): 'default' or a folder.")] = None,
    independent_model: Annotated[Optional[str], typer.Option(help="bt2 (bct: optional): the independently trained new model; training starts from it.")] = None,
    extra_dims: Annotated[Optional[int], typer.Option(help="bt2: dims added by the basis transform (default 25% of the old dim).")] = None,
    new_weight: Annotated[float, typer.Option(help="bt2/bct: weight of the new-new contrastive loss.")] = 1.0,
    influence_weight: Annotated[float, typer.Option(help="bt2/bct: weight of the influence loss (b(query) vs old documents).")] = 10.0,
    align_old_weight: Annotated[float, typer.Option(help="bt2: weight of the cosine alignment of b to the old model.")] = 5.0,
    align_new_weight: Annotated[float, typer.Option(help="bt2: weight of the cosine alignment to the independent model.")] = 1.0,
) -> None:
    """Train with one objective and write a telescope model folder (manifest with objective, pairs, data hash,
    seed, steps, speed, peak memory and the STS-B dev grid)."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {threads}")
        torch.set_num_threads(threads)
    if objective == "unified":  # the fused text + categorical model (cli/train_unified.py, issue 8)
        from telescope.cli.train_unified import run_unified

        if len(data) != 1 or steps is not None:
            raise ValueError(f"--objective unified: expected one --data file and --epochs (not --steps), got {len(data)} file(s), steps={steps}")
        run_unified(data[0], out, field or [], model=base, kind=kind, rows=rows, chunk_dim=chunk_dim, tail_dim=tail_dim,
                    epochs=_whole_epochs(epochs), batch_size=batch_size, lr=head_lr, seed=seed, echo=typer.echo)
        return

    from telescope.embedder.training import OBJECTIVES, TrainConfig, parse_pairs
    from telescope.eval.datasets import shared_data
    from telescope.embedder.training import train as run

    if objective not in OBJECTIVES:
        raise ValueError(f"--objective: expected one of {', '.join(OBJECTIVES)}, unified; got {objective!r}")

    config = TrainConfig(
        objective=objective,
        data=[str(d) for d in data],
        out=str(out),
        base=base,
        pooling=pooling,
        pairs=parse_pairs(pairs) if pairs else None,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        learning_rate=lr,
        head_learning_rate=head_lr,
        warmup_ratio=warmup,
        kl_weight=kl_weight,
        kl_temperature=kl_temperature,
        mltp_latents=mltp_latents,
        mltp_heads=mltp_heads,
        save_steps=save_steps,
        max_rows=max_rows,
        dev_sts=(dev_sts or None) if dev_sts is not None else str(shared_data("stsb", "tsv", "sts-dev.tsv")),
        old_model=old_model,
        independent_model=independent_model,
        extra_dims=extra_dims,
        new_weight=new_weight,
        influence_weight=influence_weight,
        align_old_weight=align_old_weight,
        align_new_weight=align_new_weight,
    )
    manifest = run(config)
    t = manifest.training
    Console(stderr=True).print(
        f"wrote {out}: {t['objective']} ({t['loss']}), {t['steps']} steps, "
        f"{t['steps_per_second']} steps/s, peak RSS {t['peak_rss_mb']} MB; "
        f"STS-B dev mean over pairs {manifest.eval.get('stsb_dev_pairs_mean')}"
    )


def _whole_epochs(epochs: float | None) -> int:
    """``--objective unified`` trains whole passes: 3 by default; 2.5 is refused, not truncated to 2."""
    if epochs is None:
        return 3
    if not (epochs >= 1 and float(epochs).is_integer()):
        raise ValueError(f"--epochs: expected a whole number >= 1 for --objective unified, got {epochs}")
    return int(epochs)
