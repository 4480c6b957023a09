"""What every params section shares: strict models, the output gate's row bounds, shard parallelism."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A params section: unknown keys are rejected, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidationParams(Section):
    """Great Expectations gate on a stage's output."""

    min_rows: int = Field(1, ge=0, description="Fewest rows the output may have.")
    max_rows: int | None = Field(None, ge=1, description="Most rows the output may have (null: no limit).")

    @model_validator(mode="after")
    def _range(self) -> ValidationParams:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) is below min_rows ({self.min_rows})")
        return self


class ParallelParams(Section):
    """Shard-parallel execution through Prefect's Dask task runner."""

    workers: int = Field(2, ge=1, le=512, description="Worker processes of the Dask LocalCluster.")
    scheduler_address: str | None = Field(
        None, description="tcp://host:8786 of an existing Dask scheduler; null starts a LocalCluster."
    )
