"""The tokenizer stage: data/dedup/train -> models/tokenizer (byte-level BPE), every split -> data/tokens/*.bin.

The tokenizer is saved in Hugging Face format (``AutoTokenizer.from_pretrained("models/tokenizer")``); the
token files are flat uint16/uint32 arrays, documents joined by EOS, described by ``data/tokens/manifest.json``.
Both outputs are staged and renamed into place only when both are complete.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from pipelines import artifacts, tracking
from pipelines.config import Params
from tasks.tokenizer.bpe import TokenizerError, tokenizer_metrics, train_tokenizer
from tasks.tokenizer.packing import pack_splits
from tasks.tokens import load_tokens

STAGE = "tokenizer"
SPLITS = ("train", "val", "test")


@flow(name=STAGE, validate_parameters=False)
def tokenizer(params: Params, root: Path) -> dict[str, float]:
    """Train the tokenizer on the train split and pack every split; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``tokenizer`` section).
        root: the repository.
    """
    cfg = params.tokenizer
    dedup_dir = root / artifacts.DEDUP_DIR
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        with artifacts.staged_output(root / artifacts.TOKENIZER_DIR) as tok_dir, \
                artifacts.staged_output(root / artifacts.TOKENS_DIR) as tokens_dir:
            trained = train_tokenizer(
                train_dir=dedup_dir / "train", out_dir=tok_dir, vocab_size=cfg.vocab_size,
                min_frequency=cfg.min_frequency, special_tokens=(cfg.bos_token, cfg.eos_token, cfg.pad_token),
                bos_token=cfg.bos_token, eos_token=cfg.eos_token, pad_token=cfg.pad_token,
                normalization=cfg.normalization, add_prefix_space=cfg.add_prefix_space, batch_size=cfg.batch_size)
            packed = pack_splits(split_dirs={split: dedup_dir / split for split in SPLITS}, tokenizer_dir=tok_dir,
                                 out_dir=tokens_dir, batch_size=cfg.batch_size, workers=cfg.workers,
                                 tokenizer_ref=artifacts.TOKENIZER_DIR.as_posix())
            quality = tokenizer_metrics(val_dir=dedup_dir / "val", tokenizer_dir=tok_dir,
                                        train_tokens=load_tokens(tokens_dir, "train"))
            if quality.get("roundtrip_errors") and cfg.normalization == "none":  # nfc/nfkc change text by design
                raise TokenizerError(f"{quality['roundtrip_errors']} val documents do not survive encode/decode "
                                     "with the trained tokenizer: nothing was published")
        stats: dict[str, float] = {"vocab_size": trained["vocab_size"], "merges": trained["merges"],
                                   "train_seconds": round(trained["seconds"], 3)}
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
