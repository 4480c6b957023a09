"""The tokenizer stage: data/dedup/train -> models/tokenizer (byte-level BPE), every split -> data/tokens/*.bin.

The tokenizer is saved in Hugging Face format (``AutoTokenizer.from_pretrained("models/tokenizer")``); the
token files are flat uint16/uint32 arrays, documents joined by EOS, described by ``data/tokens/manifest.json``.
Both outputs are staged and renamed into place only when both are complete.

With ``pretrain.checkpoint`` (continued pretraining) models/tokenizer is that checkpoint's own tokenizer and the
corpus is packed with it; the BPE is still trained, in a temporary directory, and both are measured on the val split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, operations, tracking
from pipelines.config import Params
from tasks.modeling import source
from tasks.tokenizer.bpe import TokenizerError, tokenizer_metrics, train_tokenizer
from tasks.tokenizer.packing import pack_splits
from tasks.tokenizer.pretrained import adopt_tokenizer, check_tokenizer, compare_with_bpe
from tasks.tokens import load_tokens

STAGE = "tokenizer"
SPLITS = ("train", "val", "test")
SETTING = "pretrain.checkpoint"
log = logging.getLogger("flows.tokenizer")


def preflight(params: Params, root: Path) -> tuple[Path, dict[str, Any]] | None:
    """Resolve and check ``pretrain.checkpoint`` and its tokenizer before anything is written (the pipeline calls it
    before its parent run); returns its directory and ``config.json``, None without one.

    Raises:
        CheckpointError: naming ``pretrain.checkpoint`` (not found, hub unreachable, an encoder, a tokenizer that
            cannot pack the corpus for the model).
    """
    spec = params.pretrain.checkpoint
    if spec is None:
        return None
    directory = source.resolve(spec.path, revision=spec.revision, root=root, setting=SETTING,
                               retry=operations.retrying(params.operations.retries, "downloading a checkpoint"))
    config = source.check(directory, setting=SETTING, needs_decoder=True)
    check_tokenizer(directory, config=config, setting=SETTING)
    return directory, config


@flow(name=STAGE, validate_parameters=False)
def tokenizer(params: Params, root: Path) -> dict[str, float]:
    """Train the tokenizer on the train split and pack every split; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``tokenizer`` section).
        root: the repository.
    """
    cfg = params.tokenizer
    dedup_dir = root / artifacts.DEDUP_DIR
    resolved = preflight(params, root)
    bpe = {"train_dir": dedup_dir / "train", "vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency,
           "special_tokens": (cfg.bos_token, cfg.eos_token, cfg.pad_token), "bos_token": cfg.bos_token,
           "eos_token": cfg.eos_token, "pad_token": cfg.pad_token, "normalization": cfg.normalization,
           "add_prefix_space": cfg.add_prefix_space, "batch_size": cfg.batch_size}
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        checkpoint = None
        if resolved is not None:  # its tokenizer is an input of this run, by the checkpoint's content digest
            spec = params.pretrain.checkpoint
            assert spec is not None
            checkpoint = source.describe(resolved[0], source=spec.path, revision=spec.revision, config=resolved[1])
            run.log_checkpoint(checkpoint.record())
        with artifacts.staged_output(root / artifacts.TOKENIZER_DIR) as tok_dir, \
                artifacts.staged_output(root / artifacts.TOKENS_DIR) as tokens_dir:
            if checkpoint is None:
                trained = train_tokenizer(out_dir=tok_dir, **bpe)
            else:
                trained = adopt_tokenizer(checkpoint_dir=checkpoint.dir, out_dir=tok_dir,
                                          provenance=checkpoint.provenance(), setting=SETTING)
            packed = pack_splits(split_dirs={split: dedup_dir / split for split in SPLITS}, tokenizer_dir=tok_dir,
                                 out_dir=tokens_dir, batch_size=cfg.batch_size, workers=cfg.workers,
                                 tokenizer_ref=artifacts.TOKENIZER_DIR.as_posix())
            quality = tokenizer_metrics(val_dir=dedup_dir / "val", tokenizer_dir=tok_dir,
                                        train_tokens=load_tokens(tokens_dir, "train"))
            if checkpoint is not None and quality.get("roundtrip_errors"):  # the checkpoint's own rules (lower case...)
                log.warning("%s val documents do not survive encode/decode with the checkpoint's tokenizer",
                            quality["roundtrip_errors"])
            elif quality.get("roundtrip_errors") and cfg.normalization == "none":  # nfc/nfkc change text by design
                raise TokenizerError(f"{quality['roundtrip_errors']} val documents do not survive encode/decode "
                                     "with the trained tokenizer: nothing was published")
        stats: dict[str, float] = {"vocab_size": trained["vocab_size"]}
        if "merges" in trained:  # a BPE (the checkpoint's may be WordPiece or Unigram)
            stats["merges"] = trained["merges"]
        if checkpoint is None:
            stats["train_seconds"] = round(trained["seconds"], 3)
        else:  # what the checkpoint's vocabulary costs on this corpus, next to the BPE trained on it
            stats.update(compare_with_bpe(val_dir=dedup_dir / "val", checkpoint_val_tokens=int(quality["tokens"]),
                                          **bpe))
        for split, counts in packed.items():
            stats[f"tokens.{split}"] = counts["tokens"]
            stats[f"docs.{split}"] = counts["docs"]
            stats[f"tokens_per_second.{split}"] = round(counts["tokens_per_second"])
        stats.update({f"val.{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in quality.items()})
        run.log_stats(stats)
        # timings go to MLflow only: the DVC metrics file stays byte-identical for identical inputs
        stable = {k: v for k, v in stats.items() if not k.startswith(("train_seconds", "tokens_per_second"))}
        run.log_artifact(artifacts.write_metrics(root, STAGE, stable))
    return stats


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, tokenizer))
