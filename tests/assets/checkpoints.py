"""Tiny Hugging Face checkpoints of three architectures, as a user would bring them: random weights saved with
``save_pretrained`` and a tokenizer of the architecture's own kind (BERT: WordPiece ``vocab.txt`` only, no
``tokenizer.json``; GPT-2: byte-level BPE ``vocab.json`` + ``merges.txt``, no pad token; Llama: a BPE
``tokenizer.json`` with BOS/EOS). Nothing here comes from lmforge's own model code.
"""

from __future__ import annotations

from pathlib import Path

ARCHITECTURES = ("bert", "gpt2", "llama")
WORDS = ("the cat dog bird tree sat ran flew on over under mat log home a an of and to in is was it this that with "
         "for as by at from . , ! ?").split()
"""Words of the tests' task data (tests/tasks/training/finetune_fixtures.py), so the tokenizers cover them."""


def _corpus(texts: list[str] | None = None) -> list[str]:
    import itertools

    return texts or [" ".join(p) + " ." for p in itertools.permutations(WORDS[:12], 3)][:600]


def _bert(out: Path, texts: list[str] | None, positions: int) -> None:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    out.mkdir(parents=True, exist_ok=True)
    if texts:  # a WordPiece vocabulary learned by the tokenizers library, as BERT's own was
        from tokenizers import BertWordPieceTokenizer

        wordpiece = BertWordPieceTokenizer(lowercase=True)
        wordpiece.train_from_iterator(texts, vocab_size=1000, special_tokens=specials, show_progress=False)
        wordpiece.save_model(str(out))
        vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    else:
        letters = sorted({c for w in WORDS for c in w})
        vocab = list(dict.fromkeys(specials + sorted(set(WORDS)) + [f"##{c}" for c in letters] + letters))
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=positions, pad_token_id=0)
    BertForMaskedLM(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "tokenizer.json").unlink(missing_ok=True)  # as old BERT checkpoints come: vocab.txt only


def _bpe(out: Path, *, specials: list[str], texts: list[str] | None) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(texts), vocab_size=1000 if texts else 300, min_frequency=1,
                            special_tokens=specials, show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(out))  # vocab.json + merges.txt
    return out


def _gpt2(out: Path, texts: list[str] | None, positions: int) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    _bpe(out, specials=["<|endoftext|>"], texts=texts)
    bpe = ByteLevelBPETokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=positions,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _llama(out: Path, texts: list[str] | None, positions: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    _bpe(out / "bpe", specials=["<s>", "</s>", "<unk>"], texts=texts)
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(str(out / "bpe" / "vocab.json"), str(out / "bpe" / "merges.txt"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=positions,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    import shutil

    shutil.rmtree(out / "bpe")


def save_checkpoint(architecture: str, out: Path, *, seed: int = 0, texts: list[str] | None = None,
                    positions: int = 128) -> Path:
    """A tiny random checkpoint of ``architecture`` (bert, gpt2 or llama) with its tokenizer, saved to ``out``; the
    tokenizer learned from ``texts`` (None: the tests' task words) and ``positions`` positions."""
    import torch

    torch.manual_seed(seed)
    {"bert": _bert, "gpt2": _gpt2, "llama": _llama}[architecture](out, texts, positions)
    return out
