"""CoNLL-style files: sentences with their first line, the CoNLL-2003 four-column shape, tab-separated files with
spaces in tokens, document boundaries, compressed files, and the bad lines that quarantine a sentence while the
sentences around it are kept."""

from __future__ import annotations

import gzip
from pathlib import Path

from tasks.readers.conll import iter_conll
from tasks.readers.items import Quarantined, Record

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def read(path: Path, limit: int | None = None) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for item in iter_conll(path, limit):
        where = str(item.at.number) if item.at else "file"
        if isinstance(item, Record):
            out.append(("ok", where, " ".join(item.value["tokens"]), " ".join(item.value["tags"])))
        else:
            assert isinstance(item, Quarantined)
            out.append(("bad", where, item.reason))
    return out


def test_conll2003_sentences_with_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text(CONLL2003, encoding="utf-8")
    assert read(path) == [("ok", "3", "EU rejects German call .", "B-ORG O B-MISC O O"),
                          ("ok", "9", "Peter Blackburn", "B-PER I-PER"),
                          ("ok", "14", "BRUSSELS 1996-08-22", "B-LOC O")]


def test_tabs_keep_spaces_in_tokens_and_docstart_ends_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "wnut.txt"
    path.write_bytes("\ufeffNew York\tB-LOC\r\nis\tO\r\n-DOCSTART-\tO\r\nhi\tO\r\n\r\n\r\n".encode())
    assert read(path) == [("ok", "1", "New York is", "B-LOC O"), ("ok", "4", "hi", "O")]


def test_a_file_without_a_last_blank_line_or_with_only_blanks(tmp_path: Path) -> None:
    (tmp_path / "a.conll").write_text("a O\nb B-X", encoding="utf-8")
    assert read(tmp_path / "a.conll") == [("ok", "1", "a b", "O B-X")]
    (tmp_path / "b.conll").write_text("\n\n  \n", encoding="utf-8")
    assert read(tmp_path / "b.conll") == []


def test_compressed(tmp_path: Path) -> None:
    path = tmp_path / "train.conll.gz"
    path.write_bytes(gzip.compress(CONLL2003.encode()))
    assert [r[1] for r in read(path)] == ["3", "9", "14"]


def test_bad_lines_quarantine_their_sentence_only(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_bytes(b"good O\n\nno_tag_here\nx O\n\nbad \xff O\n\nlast O\n\n" + b"long " * 40 + b"O\n")
    assert read(path)[:4] == [("ok", "1", "good", "O"), ("bad", "3", "malformed_line"), ("bad", "6", "undecodable"),
                              ("ok", "8", "last", "O")]
    assert read(path)[4][:2] == ("ok", "10")  # no limit: a long line is a token like any other
    assert read(path, limit=100)[4] == ("bad", "10", "too_long")

def test_a_sentence_over_the_limit_is_too_long(tmp_path: Path) -> None:
    path = tmp_path / "long.conll"
    path.write_text("".join(f"w{i} O\n" for i in range(50)) + "\nshort O\n", encoding="utf-8")
    got = read(path, limit=100)
    assert got == [("bad", "1", "too_long"), ("ok", "52", "short", "O")]


def test_finetune_reads_conll_files_by_suffix_with_file_and_line(tmp_path: Path) -> None:
    from tasks.finetune.files import iter_files
    from tasks.finetune.items import Bad, Raw

    (tmp_path / "train.conll").write_text(CONLL2003 + "\nbroken\n", encoding="utf-8")
    fields = {"tokens": "tokens", "tags": "tags", "split": None}
    items = list(iter_files(paths=["*.conll"], base_dir=tmp_path, fmt="auto", fields=fields, what="task 'ner'"))
    assert [(i.where, type(i).__name__) for i in items] == [("train.conll:3", "Raw"), ("train.conll:9", "Raw"),
                                                            ("train.conll:14", "Raw"), ("train.conll:17", "Bad")]
    assert isinstance(items[1], Raw) and items[1].record == {"tokens": ["Peter", "Blackburn"],
                                                             "tags": ["B-PER", "I-PER"]}
    assert isinstance(items[3], Bad) and items[3].reason == "malformed_line"
