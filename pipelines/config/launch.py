"""How the training stages (pretrain, finetune, distill) start their processes: one section shape, shared."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import Section


class LaunchParams(Section):
    """How the training processes are started (the command is printed before it runs)."""

    launcher: Literal["python", "torchrun", "deepspeed"] = Field(
        "python", description="python: one process; torchrun: nproc local processes; deepspeed: its launcher, "
        "with a hostfile for several nodes.")
    nproc: int = Field(1, ge=1, le=1024, description="Processes (torchrun / deepspeed without a hostfile; with a "
                       "hostfile, each host's slots= decide).")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile (e.g. infra/deepspeed/hostfile), lines "
                                 "'HOST slots=N', for multi-node runs; relative to the repo. DeepSpeed reaches the "
                                 "hosts by passwordless ssh, unless node_rank is set.")
    master_addr: str | None = Field(None, description="Address of rank 0 (null: 127.0.0.1 for local runs, else "
                                    "DeepSpeed asks the hostfile's first host over ssh).")
    master_port: int | None = Field(None, ge=1024, le=65535, description="Rendezvous port (null: a free one).")
    node_rank: int | None = Field(None, ge=0, description="deepspeed with a hostfile, without ssh: this node's "
                                  "index in the hostfile; every node runs the stage itself (SLURM, Kubernetes). "
                                  "Needs master_addr and master_port.")

    @model_validator(mode="after")
    def _consistent(self) -> LaunchParams:
        if self.node_rank is not None:
            if self.launcher != "deepspeed" or not self.hostfile:
                raise ValueError("node_rank needs launcher: deepspeed and a hostfile")
            if not self.master_addr or not self.master_port:
                raise ValueError("node_rank needs master_addr and master_port: every node must meet rank 0 there")
        if self.hostfile and self.launcher != "deepspeed":
            raise ValueError(f"hostfile is read by the deepspeed launcher only, not by {self.launcher!r}")
        return self


def launch_files(launch: LaunchParams, deepspeed_config: str | None) -> list[str]:
    """What a training stage's launch reads besides its data, as DVC deps (paths as params give them): the DeepSpeed
    JSON merged over the generated one, and the hostfile (its slots decide the number of processes)."""
    return [f for f in (deepspeed_config, launch.hostfile) if f]
