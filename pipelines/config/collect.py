"""Params of the collect stage: the sources and how records are sharded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pipelines.config.base import Section, ValidationParams
from pipelines.config.sources import HF_BUILDERS, Written, glob_deps, hf_local, hub_pin, repo_dep


class _SourceBase(Section):
    name: str = Field(
        description="Unique name of the source; recorded in every record's `source` column and in the metrics.",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
    )
    max_docs: int | None = Field(None, ge=1, description="Keep at most this many documents from the source.")
    weight: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Fraction of the source's documents kept, sampled deterministically from each record's id "
        "and the stage seed (1.0 keeps all).",
    )


class DefaultSource(_SourceBase):
    """The offline corpus: standard-library documentation topics and module docstrings of this Python."""

    kind: Literal["default"] = Field(description="Source kind.")
    include_topics: bool = Field(True, description="Include the pydoc documentation topics.")
    include_docstrings: bool = Field(True, description="Include one document per standard-library module.")


class FilesSource(_SourceBase):
    """Local files: jsonl/json/parquet/txt/md, plain or .gz/.zst compressed."""

    kind: Literal["files"] = Field(description="Source kind.")
    paths: list[str] = Field(min_length=1, description="Glob patterns (** allowed), relative to the repository.")
    format: Literal["auto", "jsonl", "json", "parquet", "txt", "md"] = Field(
        "auto", description="File format; `auto` picks it from the suffix (after a compression suffix)."
    )
    text_field: str = Field("text", min_length=1, description="Field holding the text in jsonl/json/parquet.")
    text_unit: Literal["file", "line"] = Field("file", description="txt/md: one document per file or per line.")


class HFSource(_SourceBase):
    """A Hugging Face dataset: hub id (streamed), local dataset directory, or a builder with data files."""

    kind: Literal["hf"] = Field(description="Source kind.")
    path: str = Field(min_length=1, description="Hub id, local directory, or builder name (json, parquet, text).")
    config: str | None = Field(None, description="Dataset configuration name.")
    split: str = Field("train", description="Split to read.")
    text_field: str = Field("text", min_length=1, description="Column holding the text.")
    streaming: bool = Field(True, description="Stream instead of downloading/preparing the whole dataset.")
    data_files: list[str] | None = Field(None, description="Data files for a builder name or a local directory.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch) to pin.")


class WarcSource(_SourceBase):
    """Common Crawl style WARC (HTML responses, main text extracted) or WET files, plain or gzipped."""

    kind: Literal["warc"] = Field(description="Source kind.")
    paths: list[str] = Field(min_length=1, description="Glob patterns of .warc/.warc.gz/.wet/.wet.gz files.")
    min_text_chars: int = Field(1, ge=1, description="Pages whose extracted text is shorter are quarantined.")


Source = Annotated[DefaultSource | FilesSource | HFSource | WarcSource, Field(discriminator="kind")]


class CollectParams(Section):
    """The collect stage: read every source, write Parquet shards of records and a quarantine file."""

    seed: int = Field(1234, ge=0, description="Seed of the deterministic per-source sampling (`weight`).")
    sources: list[Source] = Field(min_length=1, description="Sources, read in this order.")
    shard_max_records: int = Field(10_000, ge=1, description="A shard is closed after this many records.")
    shard_max_bytes: int = Field(
        64_000_000, ge=1_000, description="A shard is closed once its text reaches this many UTF-8 bytes."
    )
    max_doc_bytes: int = Field(
        10_000_000, ge=1, description="Documents larger than this are quarantined as `too_long`."
    )
    validation: ValidationParams = Field(default_factory=ValidationParams, description="Output gate.")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return sources

    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: what its local sources read (see `source_deps`)."""
        return source_deps(self, root)

    def status_notes(self, root: Path) -> list[str]:
        """Lines for `lmforge status`: how each hub dataset is pinned, and how many of the file and WARC sources'
        files are new, changed, removed or reusable from the stage's cache."""
        from pipelines.incremental import digests, glob_files, status_line

        patterns = [p for src in self.sources if isinstance(src, FilesSource | WarcSource) for p in src.paths]
        lines = source_pins(self, root)
        files = digests(glob_files(patterns, root), root) if patterns else None
        line = status_line(root, "collect", "input files", files) if files is not None else None
        return [*lines, line] if line else lines


def source_deps(params: CollectParams, root: Path) -> list[str]:
    """The local data the stage reads (files, WARC and local Hugging Face sources), as DVC deps, sorted and
    without an entry inside another; hub datasets are pinned by their revision instead (`source_pins`).

    Raises:
        OutputOverlapError: a source reaches into what the pipeline writes (collect runs first: any output).
    """
    written = Written.after(root, "collect")
    deps: set[str] = set()
    for src in params.sources:
        if isinstance(src, FilesSource | WarcSource):
            for pattern in src.paths:
                deps.update(glob_deps(pattern, root, written=written))
        elif isinstance(src, HFSource):
            local = hf_local(src.path, root)
            if local is not None:
                written.check_tree(src.path, local)
                deps.add(repo_dep(local, root))
            elif src.path in HF_BUILDERS:
                for pattern in src.data_files or []:
                    deps.update(glob_deps(pattern, root, written=written))
    return sorted(d for d in deps if not any(o != d and Path(d).is_relative_to(o) for o in deps))


def source_pins(params: CollectParams, root: Path) -> list[str]:
    """One line per hub dataset: the revision it is pinned at, or that it is not pinned."""
    lines = []
    for src in params.sources:
        if isinstance(src, HFSource) and hf_local(src.path, root) is None and src.path not in HF_BUILDERS:
            lines.append(hub_pin(f"source '{src.name}'", src.path, src.revision))
    return lines

