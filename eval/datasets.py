"""Benchmark files to Python objects, with errors that name the file, the line and the problem.

Owns where the shared datasets live (``shared_data``), reading three STS layouts and the BEIR retrieval layout,
and the data hash that names a dataset in reports:

- **STS-B** (``sts-*.csv`` of the official release): tab-separated, no header, no quoting (the files hold bare
  ``"``), fields ``[4]`` score, ``[5]`` sentence1, ``[6]`` sentence2; some lines carry extra source columns.
- **generic TSV**: a header naming ``sentence1``, ``sentence2`` and ``score`` (any order, other columns ignored).
- **SICK**: a tab-separated header naming ``sentence_A``, ``sentence_B`` and ``relatedness_score``.
- **BEIR** (Thakur et al., NeurIPS 2021 Datasets): ``corpus.jsonl`` (``_id``, ``title``, ``text``),
  ``queries.jsonl`` (``_id``, ``text``), ``qrels/<split>.tsv`` (header, then ``query-id corpus-id score``).
  A document's text is ``title + " " + text`` stripped, as BEIR's and MTEB's evaluators build it. Only the
  queries named in the qrels are evaluated, as in BEIR.

The layout of an STS file is detected from its first line. csv/json parsing is the standard library's; this
module adds only the checks (a missing column, an empty line, a score that is not a number, a qrels line naming
an id that is not in the corpus) that the libraries leave to the caller.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

STSB_FIELDS = (4, 5, 6)
GENERIC_COLUMNS = ("sentence1", "sentence2", "score")
SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


def shared_data(*parts: str) -> Path:
    """A path under the real datasets kept out of the repo: ``$TELESCOPE_SHARED_DATA`` if set, else ``shared/data``
    beside the checkout (``../shared/data``, listed in its README)."""
    root = os.environ.get("TELESCOPE_SHARED_DATA")
    return (Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data").joinpath(*parts)


def file_hash(paths: list[Path] | Path) -> str:
    """sha256 (first 16 hex digits) over the bytes of one file or several, in the order given."""
    digest = hashlib.sha256()
    for path in [paths] if isinstance(paths, Path) else paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    return path


# -- STS ---------------------------------------------------------------------------------------------------------


@dataclass
class StsData:
    """Sentence pairs with gold similarity scores."""

    path: Path
    layout: str  # "stsb" | "tsv" | "sick"
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    hash: str = ""

    def __len__(self) -> int:
        return len(self.scores)


def read_sts(path: str | Path) -> StsData:
    """Read an STS file in the STS-B, generic TSV or SICK layout (detected from the first line)."""
    path = _require_file(Path(path), "data")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or not any(rows):
        raise ValueError(f"{path}: expected STS sentence pairs, got an empty file")
    header = [c.strip() for c in rows[0]]
    if all(c in header for c in GENERIC_COLUMNS):
        layout, columns, start = "tsv", [header.index(c) for c in GENERIC_COLUMNS], 2
    elif all(c in header for c in SICK_COLUMNS):
        layout, columns, start = "sick", [header.index(c) for c in SICK_COLUMNS], 2
    elif len(header) > max(STSB_FIELDS) and _is_number(header[STSB_FIELDS[0]]):
        layout, columns, start = "stsb", list(STSB_FIELDS), 1
        # STS-B columns are score, sentence1, sentence2: reorder to sentence1, sentence2, score
        columns = [columns[1], columns[2], columns[0]]
    else:
        raise ValueError(
            f"{path}:1: expected a header with columns {', '.join(GENERIC_COLUMNS)} (TSV) or "
            f"{', '.join(SICK_COLUMNS)} (SICK), or an STS-B line (tab-separated, score in field 5 of 7), "
            f"got {rows[0][:8]!r}"
        )
    body = rows[start - 1 :] if layout == "stsb" else rows[1:]
    s1, s2, scores = [], [], []
    for lineno, row in enumerate(body, start=start):
        if not row or all(not c.strip() for c in row):
            raise ValueError(f"{path}:{lineno}: expected a sentence pair, got an empty line")
        if len(row) <= max(columns):
            raise ValueError(
                f"{path}:{lineno}: expected at least {max(columns) + 1} tab-separated fields ({layout} layout), "
                f"got {len(row)}"
            )
        a, b, score = (row[c].strip() for c in columns)
        if not _is_number(score):
            raise ValueError(f"{path}:{lineno}: expected a numeric score, got {score!r}")
        for name, text in (("sentence1", a), ("sentence2", b)):
            if not text:
                raise ValueError(f"{path}:{lineno}: expected a non-empty {name}, got an empty field")
        s1.append(a)
        s2.append(b)
        scores.append(float(score))
    if not scores:
        raise ValueError(f"{path}: expected at least one sentence pair after the header, got none")
    return StsData(path, layout, s1, s2, scores, file_hash(path))


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# -- BEIR --------------------------------------------------------------------------------------------------------


@dataclass
class BeirData:
    """A BEIR retrieval task: the corpus, the queries that have judgements in ``split``, and the judgements."""

    root: Path
    split: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> graded relevance
    hash: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file -> its own hash


def read_beir(root: str | Path, split: str = "test") -> BeirData:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data: expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), got {str(root)!r}")
    corpus_path = _require_file(root / "corpus.jsonl", "corpus")
    queries_path = _require_file(root / "queries.jsonl", "queries")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise FileNotFoundError(f"qrels: no such file {str(qrels_path)!r} (split {split!r}; splits here: {have})")

    doc_ids, doc_texts = [], []
    for lineno, obj in _jsonl(corpus_path):
        doc_ids.append(_id_of(obj, corpus_path, lineno))
        title, text = obj.get("title") or "", obj.get("text")
        if not isinstance(text, str) or not isinstance(title, str):
            raise ValueError(f"{corpus_path}:{lineno}: expected string fields 'title' and 'text', got {obj!r:.200}")
        doc_texts.append((title + " " + text).strip())
    _check_unique(doc_ids, corpus_path)
    queries: dict[str, str] = {}
    for lineno, obj in _jsonl(queries_path):
        qid = _id_of(obj, queries_path, lineno)
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise ValueError(f"{queries_path}:{lineno}: expected a non-empty string field 'text', got {obj!r:.200}")
        if qid in queries:
            raise ValueError(f"{queries_path}:{lineno}: expected unique '_id' values, got {qid!r} again")
        queries[qid] = obj["text"]
    qrels = _read_qrels(qrels_path, queries, set(doc_ids))
    query_ids = [q for q in queries if q in qrels]
    files = [corpus_path, queries_path, qrels_path]
    return BeirData(
        root=root,
        split=split,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        query_texts=[queries[q] for q in query_ids],
        qrels=qrels,
        hash=file_hash(files),
        files={str(p.relative_to(root)): file_hash(p) for p in files},
    )


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise ValueError(f"{path}: expected JSON lines, got an empty file")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got an empty line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _id_of(obj: dict, path: Path, lineno: int) -> str:
    value = obj.get("_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}:{lineno}: expected a non-empty string field '_id', got {value!r}")
    return value


def _check_unique(ids: list[str], path: Path) -> None:
    seen: set[str] = set()
    for lineno, i in enumerate(ids, start=1):
        if i in seen:
            raise ValueError(f"{path}:{lineno}: expected unique '_id' values, got {i!r} again")
        seen.add(i)


def _read_qrels(path: Path, queries: dict[str, str], docs: set[str]) -> dict[str, dict[str, int]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    expected = ["query-id", "corpus-id", "score"]
    if not rows or [c.strip() for c in rows[0]] != expected:
        raise ValueError(f"{path}:1: expected the header {'	'.join(expected)!r}, got {(rows[0] if rows else [])!r}")
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            raise ValueError(f"{path}:{lineno}: expected 'query-id corpus-id score', got an empty line")
        if len(row) != 3:
            raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields (query-id corpus-id score), got {len(row)}")
        qid, did, score = (c.strip() for c in row)
        try:
            grade = int(score)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected an integer relevance score, got {score!r}") from None
        if qid not in queries:
            raise LookupError(f"{path}:{lineno}: query-id {qid!r} is not in queries.jsonl")
        if did not in docs:
            raise LookupError(f"{path}:{lineno}: corpus-id {did!r} is not in corpus.jsonl")
        earlier = qrels.get(qid, {}).get(did)
        if earlier is not None and earlier != grade:
            raise ValueError(
                f"{path}:{lineno}: score: expected one grade per (query-id, corpus-id), got {grade} for "
                f"({qid!r}, {did!r}), graded {earlier} on line {first_line[(qid, did)]}"
            )
        first_line.setdefault((qid, did), lineno)
        qrels.setdefault(qid, {})[did] = grade
    if not qrels:
        raise ValueError(f"{path}: expected at least one judgement after the header, got none")
    return qrels
