"""Params of the dedup stage: exact and MinHash near-duplicate removal, the splits, its gate."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from pipelines.config.base import ParallelParams, Section, ValidationParams


class MinHashParams(Section):
    """Near-duplicate detection by MinHash LSH (rensa), clusters by union-find."""

    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(5, ge=1, le=32, description="Words per shingle.")
    threshold: float = Field(
        0.7, gt=0, lt=1, description="Jaccard similarity of two documents' sets of word shingle_size-grams (of the "
        "normalised text) from which they are near duplicates. Pairs at the threshold are found with probability "
        "~0.95, pairs 0.05 above it ~1 (benchmarks/dedup_recall.py); with verification, pairs down to threshold - "
        "verify_margin may be merged too, fewer the lower they are, and almost none below threshold - 2 x margin. "
        "0.7 with margin 0.05: recall at least datatrove 0.10.1's (14 x 8 bands, no check) overall and in every "
        "Jaccard bucket from 0.65 up, at the same precision.")
    bands: int | None = Field(None, ge=1, description="LSH bands (with rows); null: chosen for the verification bar "
                              "(threshold - verify_margin), or for threshold without verification.")
    rows: int | None = Field(None, ge=1, description="Signature values per band (with bands).")
    verify: bool = Field(True, description="Check each LSH candidate pair's estimated Jaccard (share of equal "
                         "signature values) against threshold - verify_margin: removes the banding's false positives.")
    verify_margin: float = Field(
        0.05, ge=0, lt=1, description="Verification accepts pairs estimated down to threshold - margin: a 128-"
        "permutation estimate has a standard error of ~0.04 at 0.7, so true pairs at the threshold would otherwise "
        "be lost half the time.")
    seed: int = Field(0, ge=0, description="Seed of shingle hashes and permutations.")

    @model_validator(mode="after")
    def _bands_rows(self) -> MinHashParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then threshold chooses them)")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows ({self.bands * self.rows}) exceeds num_perm ({self.num_perm})")
        return self


class SplitParams(Section):
    """Deterministic train/val/test split by id hash."""

    val: float = Field(0.05, ge=0, lt=0.5, description="Fraction of documents in val.")
    test: float = Field(0.05, ge=0, lt=0.5, description="Fraction of documents in test.")
    seed: int = Field(0, ge=0, description="Seed of the id hash.")


class DedupValidationParams(ValidationParams):
    """Great Expectations gate on the dedup output."""

    split_tolerance: float = Field(0.05, ge=0, le=1, description="Largest gap between a split's share and its "
                                   "fraction (absolute), on corpora of 1000+ documents.")


class DedupParams(Section):
    """The dedup stage: exact and MinHash near-duplicate removal, then the train/val/test split."""

    minhash: MinHashParams = Field(default_factory=MinHashParams, description="Near-duplicate detection.")
    splits: SplitParams = Field(default_factory=SplitParams, description="Split fractions.")
    parallel: ParallelParams = Field(default_factory=ParallelParams, description="Shard parallelism.")
    validation: DedupValidationParams = Field(default_factory=DedupValidationParams, description="Output gate.")

    def status_notes(self, root: Path) -> list[str]:
        """Lines for `lmforge status`: how many of the shards in data/clean are new, changed, removed or reusable from
        the stage's cache, nothing when all are reusable (the shards as they are now: before clean re-runs, its
        last output)."""
        from pipelines.incremental import shard_notes

        return shard_notes(root, "dedup", "data/clean", "clean shards")
