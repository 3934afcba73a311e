"""The Ray engine of ``telescope index build --engine ray``: embedding on a Ray Data actor pool.

Only the embedding moves: the driver reads and checks the source, keeps the job state and is the collection's
one writer, exactly as with the local engine, so both engines store the same ids and (up to float rounding of
different batch compositions) the same vectors. ``RayEncoder`` is an encoder for the one ingest loop
(``telescope.pipelines.ingest``): it puts the length-sorted windows into Ray's object store, runs
``Dataset.map_batches`` with a callable class on ``ray.data.ActorPoolStrategy(size=actors)`` (each actor loads
the model once and embeds ``batch_size`` texts per call), and streams the embedded batches back to the driver.
It does so a group of windows at a time (``group_points``, 262,144 points by default), so that the object
store holds one group of the source, not all of it. Each group's dataset starts its own actor pool and drains
before the next: measured on 2 cores, 2 actors, 20,500 glosses, 69 s in one group and 87 s in three (about 9 s
a group), where a default group takes some 15 minutes at that run's 297 texts/s.

Ray comes with the ``distributed`` extra (``pip install 'telescope[distributed]'``). ``address=None`` starts
a local Ray with ``num_cpus`` CPUs (or joins the cluster named by ``RAY_ADDRESS``); ``"auto"`` or
``"ray://head:10001"`` joins a running cluster. Every node needs telescope and the model at the same path
(the packaged default model installs with telescope, so ``"default"`` resolves on each node).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telescope.pipelines.ingest import by_length


class EmbedBatch:
    """The Ray Data UDF: loads the model once per actor, appends a ``vector`` column to each batch, and a
    ``truncated`` one (the batch's count of texts cut at the model's limit, on its first row)."""

    def __init__(self, model: str, layer: int, dim: int, batch_size: int, threads: int | None = None):
        import torch

        from telescope.embedder import load_embedder

        if threads:
            torch.set_num_threads(threads)
        self.embedder = load_embedder(model)
        self.layer, self.dim, self.batch_size = layer, dim, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        before = self.embedder.truncated_texts
        vectors = self.embedder.encode(batch.column("text").to_pylist(), self.layer, self.dim, self.batch_size)
        truncated = [self.embedder.truncated_texts - before] + [0] * (batch.num_rows - 1)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        batch = batch.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, self.dim))
        return batch.append_column("truncated", pa.array(truncated, pa.int64()))


class RayEncoder:
    """Embeds windows of points on a Ray actor pool of ``actors`` actors, ``cpus_per_actor`` CPUs each."""

    def __init__(
        self,
        model: str,
        layer: int,
        dim: int,
        batch_size: int = 64,
        *,
        actors: int = 2,
        cpus_per_actor: float = 1,
        address: str | None = None,
        num_cpus: int | None = None,
        group_points: int = 262_144,
    ):
        for name, value in (("--ray-actors", actors), ("batch_size", batch_size), ("--ray-group-points", group_points)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if not cpus_per_actor > 0:
            raise ValueError(f"--ray-cpus-per-actor: expected a number > 0, got {cpus_per_actor!r}")
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as e:
            raise RuntimeError("--engine ray: Ray is not installed; install the extra: pip install 'telescope[distributed]'") from e
        self.model, self.layer, self.dim, self.batch_size = model, layer, dim, batch_size
        self.actors, self.cpus_per_actor = actors, cpus_per_actor
        self.address, self.num_cpus = address, num_cpus
        self.group_points = group_points
        self.truncated = 0  # texts over the model's token limit, as the actors counted them

    def _init(self) -> bool:
        """Start or join Ray unless this process already did; True when this call started it."""
        import ray

        if ray.is_initialized():
            return False
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address:
            kwargs["address"] = self.address
        elif self.num_cpus and not os.environ.get("RAY_ADDRESS"):
            kwargs["num_cpus"] = self.num_cpus
        ray.init(**kwargs)
        return True

    def embed(self, windows: Iterable[pa.Table]) -> Iterator[tuple[pa.Table, np.ndarray]]:
        import ray
        import ray.data

        started = self._init()
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.print_on_execution_start = False
            group: list[pa.Table] = []
            for window in windows:  # read from the driver's source as the groups are embedded
                group.append(by_length(window))
                if sum(w.num_rows for w in group) >= self.group_points:
                    yield from self._embed_group(group)
                    group = []
            if group:
                yield from self._embed_group(group)
        finally:
            if started:
                ray.shutdown()

    def _embed_group(self, windows: list[pa.Table]) -> Iterator[tuple[pa.Table, np.ndarray]]:
        import ray
        import ray.data

        block = self.batch_size * 4  # blocks of a few batches each, so that every actor of the pool gets work
        refs = [ray.put(w.slice(s, block)) for w in windows for s in range(0, w.num_rows, block)]
        if not refs:
            return
        dataset = ray.data.from_arrow_refs(refs).map_batches(
            EmbedBatch,
            fn_constructor_kwargs={
                "model": self.model, "layer": self.layer, "dim": self.dim, "batch_size": self.batch_size,
                "threads": max(1, int(self.cpus_per_actor)),
            },
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            batch_size=self.batch_size,
            batch_format="pyarrow",
            num_cpus=self.cpus_per_actor,
        )
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            vectors = batch.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
            self.truncated += pc.sum(batch.column("truncated")).as_py() or 0
            yield batch.drop_columns(["vector", "truncated"]), vectors
