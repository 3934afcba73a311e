"""Rolling out a new embedding model on a collection without stopping it: switch, backfill lazily, or roll back.

A rollout is a state recorded in the collection's properties (key ``rollout``), written atomically with the
collection changes it goes with (``Collection.reconfigure``)::

    backfilling  queries are embedded by the new model at once; the collection is widened to the new model's
                 dim; stored old vectors are scored on the compatible prefix, new ones with the full plan, one
                 merged ranking; a backfill re-embeds old points (resumable: rerun it)
    complete     no point of the old version is left
    aborting     ``--abort``: queries are embedded by the old model again (the new vectors' prefix is comparable
                 with it); a backfill re-embeds the points written by the new model with the old one
    aborted      the collection is back to the old model and its old dim

Only a model whose manifest says ``compatible_with`` the collection's model version, at a prefix equal to the
stored vectors' dim (a BT^2 or BCT model trained against it), may be rolled out; any other is refused, since
its vectors cannot be compared with the stored ones. Progress is read from the collection itself (points per
model version), never from a counter that could drift.

Example::

    status = start_rollout(collection, load_embedder("models/bt2"), "models/bt2")
    run_backfill(collection, load_embedder("models/bt2"))          # foreground, with a progress bar
    rollout_status(collection).state                               # "complete"
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from telescope.embedder import Embedder
from telescope.index import Collection, Plan, Stage
from telescope.pipelines.backfill import BackfillReport, backfill, text_of
from telescope.pipelines.ingest import LAYERS, TEXT_FIELD, text_field as collection_text_field

KEY = "rollout"
ACTIVE = ("backfilling", "aborting")


@dataclass(frozen=True)
class RolloutStatus:
    state: str
    from_model: str
    from_version: str
    to_model: str
    to_version: str
    prefix_dim: int
    target_version: str  # the version the running backfill writes: to_version, or from_version when aborting
    backfilled: int  # live points stored with the target version
    total: int  # live points
    started: float
    updated: float
    text_field: str = TEXT_FIELD  # the payload field every backfill of this rollout re-embeds (CLI or server)

    @property
    def remaining(self) -> int:
        return self.total - self.backfilled

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.backfilled / self.total

    def to_dict(self) -> dict:
        return {**asdict(self), "remaining": self.remaining, "fraction": round(self.fraction, 6)}


def rollout_status(collection: Collection) -> RolloutStatus | None:
    """The collection's rollout and its progress, or None when it never had one."""
    record = collection.properties.get(KEY)
    if record is None:
        return None
    target = record["from"]["model_version"] if record["state"] in ("aborting", "aborted") else record["to"]["model_version"]
    counts = collection.info()["model_versions"]
    return RolloutStatus(
        state=record["state"],
        from_model=record["from"]["model"],
        from_version=record["from"]["model_version"],
        to_model=record["to"]["model"],
        to_version=record["to"]["model_version"],
        prefix_dim=int(record["prefix_dim"]),
        target_version=target,
        backfilled=int(counts.get(target, 0)),
        total=len(collection),
        started=float(record["started"]),
        updated=float(record["updated"]),
        text_field=record.get("text_field", TEXT_FIELD),
    )


def check_writable_version(collection: Collection, version: str) -> None:
    """ValueError when ``version`` is the one a finished rollout took the collection away from (the old model's
    after ``complete``, the new model's after ``aborted``): its vectors would bring that version back."""
    record = collection.properties.get(KEY)
    if record is None or record["state"] not in ("complete", "aborted"):
        return
    old, new = record["from"]["model_version"], record["to"]["model_version"]
    left, kept, why = (old, new, f"the rollout from {old!r} is complete") if record["state"] == "complete" else (
        new, old, f"the rollout to {new!r} was aborted")
    if version == left:
        raise ValueError(f"model_version: expected '' or {kept!r} ({why}), got {version!r}")


def check_compatible(collection: Collection, new: Embedder) -> int:
    """The prefix on which ``new``'s vectors compare with the stored ones; ValueError naming why when none."""
    props = collection.properties
    stored = props.get("model_version")
    if not stored:
        raise ValueError(
            f"collection {collection.path.name!r}: expected a 'model_version' property (the model of its vectors), got none"
        )
    live = sorted(collection.info()["model_versions"])
    others = [v for v in live if v != stored]
    if others:
        raise ValueError(
            f"collection {collection.path.name!r}: expected every point stored by {stored!r} before a rollout, "
            f"got other versions {others}"
        )
    tag, compat = new.manifest.tag, new.manifest.compatible_with
    if tag == stored:
        raise ValueError(f"model: expected a model other than the collection's own {stored!r}, got the same")
    old_dim = collection.version_dim(stored)
    if compat is None:
        raise ValueError(
            f"model: {tag!r} is not compatible with the stored vectors ({stored!r}, {old_dim} dims): its manifest "
            f"declares no compatible_with; train it with `telescope train --objective bt2 --old-model <that model>` "
            "or re-index the collection into a new one"
        )
    if compat.model_id not in (stored, stored.rpartition(":")[0]):
        raise ValueError(
            f"model: {tag!r} is compatible with {compat.model_id!r}, not with the stored vectors' model {stored!r}"
        )
    shallow = props.get(LAYERS, {}).get(stored)
    if shallow is not None:
        raise ValueError(
            f"model: {tag!r} is compatible with {stored!r}'s last layer; the stored vectors were taken after its "
            f"layer {shallow} (index build --layer): re-index the collection into a new one"
        )
    if compat.prefix_dim != old_dim or compat.prefix_dim > new.full_dim:
        raise ValueError(
            f"model: {tag!r} declares a compatible prefix of {compat.prefix_dim} dims; expected the stored vectors' "
            f"{old_dim} (and at most its own {new.full_dim})"
        )
    return compat.prefix_dim


def widened_plan(plan: Plan, old_dim: int, new_dim: int) -> Plan:
    """The default plan for the new vectors: a last stage at the old full dim moves to the new full dim."""
    if plan.max_dim != old_dim or new_dim <= old_dim:
        return plan
    return Plan(plan.stages[:-1] + (Stage(new_dim, plan.k),))


def check_text_field(collection: Collection, text_field: str, target: str) -> None:
    """ValueError naming the field when the first point a backfill toward ``target`` would re-embed has no text
    there: checked before a rollout changes anything, rather than after it switched the collection."""
    todo = collection.ids(other_than=target, limit=1)
    if todo:
        point = collection.get(todo)[0]
        text_of(point.id, point.payload, text_field)


def _record_text_field(collection: Collection, text_field: str | None) -> RolloutStatus:
    """The rollout in progress, now backfilling from ``text_field`` (None: the one it records)."""
    status = rollout_status(collection)
    if text_field is None or text_field == status.text_field:
        return status
    check_text_field(collection, text_field, status.target_version)
    props = collection.properties
    collection.reconfigure(properties=dict(props, **{KEY: dict(props[KEY], text_field=text_field)}))
    return rollout_status(collection)


def start_rollout(collection: Collection, new: Embedder, location: str, text_field: str | None = None) -> RolloutStatus:
    """Serve ``new`` at once (``location`` is how the collection records it: "default" or a folder).

    ``text_field`` is the payload field holding each point's text (default: the collection's, see
    ``pipelines.ingest.text_field``), recorded with the rollout
    so that every backfill of it, the server's too, reads the same; a first point without it is refused before
    anything changes. Rerunning it for the rollout in progress changes nothing but the recorded ``text_field``
    when given (then resume with ``run_backfill``); for the rollout that completed, it changes nothing either and
    returns its ``complete`` status (so a retried script succeeds).
    """
    props = collection.properties
    record = props.get(KEY)
    if record is not None and record["state"] == "complete" and record["to"]["model_version"] == new.manifest.tag:
        return rollout_status(collection)
    if record is not None and record["state"] in ACTIVE:
        if record["state"] == "backfilling" and record["to"]["model_version"] == new.manifest.tag:
            return _record_text_field(collection, text_field)
        raise ValueError(
            f"rollout: expected no rollout in progress on {collection.path.name!r}, got one {record['state']} "
            f"({record['from']['model_version']} -> {record['to']['model_version']}); let it finish or --abort it"
        )
    prefix = check_compatible(collection, new)
    text_field = collection_text_field(collection) if text_field is None else text_field
    check_text_field(collection, text_field, new.manifest.tag)
    plan = collection.default_plan
    now = time.time()
    record = {
        "state": "backfilling",
        "from": {"model": props.get("model", ""), "model_version": props["model_version"], "dim": collection.dim, "plan": str(plan)},
        "to": {"model": location, "model_version": new.manifest.tag, "dim": new.full_dim,
               "plan": str(widened_plan(plan, collection.dim, new.full_dim))},
        "prefix_dim": prefix,
        "text_field": text_field,
        "started": now,
        "updated": now,
    }
    collection.reconfigure(
        dim=max(collection.dim, new.full_dim),
        default_plan=record["to"]["plan"],
        properties=dict(props, model=location, model_version=new.manifest.tag, **{KEY: record}),
    )
    return rollout_status(collection)


def abort_rollout(collection: Collection, text_field: str | None = None) -> RolloutStatus:
    """Serve the old model again; ``run_backfill`` with the old model then re-embeds the new version's points
    (from ``text_field`` when given, else the field the rollout records).

    Rerunning it once the rollback is done changes nothing and returns its ``aborted`` status (a retried script
    succeeds)."""
    props = collection.properties
    record = props.get(KEY)
    if record is not None and record["state"] == "aborted":
        return rollout_status(collection)
    if record is None or record["state"] not in ("backfilling", "complete", "aborting"):
        state = "none" if record is None else record["state"]
        raise ValueError(f"--abort: expected a rollout backfilling or complete on {collection.path.name!r}, got {state}")
    old = record["from"]
    if text_field is not None:
        check_text_field(collection, text_field, old["model_version"])
        record = dict(record, text_field=text_field)
    record = dict(record, state="aborting", updated=time.time())
    collection.reconfigure(
        default_plan=old["plan"], properties=dict(props, model=old["model"], model_version=old["model_version"], **{KEY: record})
    )
    return settle(collection)


def settle(collection: Collection) -> RolloutStatus | None:
    """Move a finished backfill to its end state: ``complete``, or ``aborted`` (narrowed back to the old dim)."""
    status = rollout_status(collection)
    if status is None or status.state not in ACTIVE or status.remaining:
        return status
    props = collection.properties
    record = dict(props[KEY], state="complete" if status.state == "backfilling" else "aborted", updated=time.time())
    dim = record["from"]["dim"] if record["state"] == "aborted" else None
    collection.reconfigure(dim=dim, properties=dict(props, **{KEY: record}))
    return rollout_status(collection)


def run_backfill(collection: Collection, embedder: Embedder, **options) -> BackfillReport:
    """Backfill toward the rollout's target version with ``embedder`` (its model), then settle the state.

    ``options`` go to :func:`telescope.pipelines.backfill.backfill` (batch_size, rate, stop, ...); its
    ``text_field`` is the one the rollout records.
    """
    status = rollout_status(collection)
    if status is None or status.state not in ACTIVE:
        raise ValueError(
            f"rollout: expected a rollout backfilling or aborting on {collection.path.name!r}, "
            f"got {'none' if status is None else status.state}"
        )
    if embedder.manifest.tag != status.target_version:
        raise ValueError(f"model: expected the model of {status.target_version!r} to backfill with, got {embedder.manifest.tag!r}")
    report = backfill(collection, embedder, **{"text_field": status.text_field, **options})
    if not report.stopped:
        settle(collection)
    return report
