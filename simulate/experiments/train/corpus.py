"""A byte-level text corpus for training: the CPython docs (Debian ``python3.11-doc``) or any text.

`load_corpus(path)` reads a text file, or a directory of ``.html``/``.htm``/``.txt``/``.rst``/
``.md`` files, strips HTML to text, and splits it into a training and a held-out part:

* a directory is split **by file** (whole documents are held out, so held-out text is never
  a continuation of training text): a file is held out when the first 8 hex digits of the
  SHA-256 of its relative path, read as a fraction of 16^8, fall below ``holdout``
  (a fixed rule, independent of any seed, so every run holds out the same files);
* a single file is split by bytes: its last ``holdout`` fraction is held out.

The bytes are UTF-8; the model sees byte ids 0..255 (vocabulary 256).

Default corpus: ``/usr/share/doc/python3.11/html`` (``apt-get install python3.11-doc``).
Sphinx pages keep only their ``role="main"`` element (navigation, sidebars, scripts and
styles dropped); files under directories whose name starts with ``_`` (``_sources``,
``_static``) and the generated index pages are skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

DEFAULT_CORPUS = Path("/usr/share/doc/python3.11/html")
DEBIAN_PACKAGE = "python3.11-doc"
TEXT_SUFFIXES = (".html", ".htm", ".txt", ".rst", ".md")
SKIP_FILES = ("genindex", "search.html", "py-modindex.html", "searchindex")
PSEUDO_DOCUMENTS = 8  # clusters of a byte-split single file (see Corpus.documents)


class CorpusError(ValueError):
    """The corpus is missing or unusable; the message says what to install or pass."""


def missing_message(path: Path) -> str:
    return (
        f"no corpus at {str(path)!r}: install Debian's {DEBIAN_PACKAGE} "
        f"(apt-get install {DEBIAN_PACKAGE}) for the default CPython docs, "
        "or give --corpus PATH (a text file or a directory of .txt/.html files)"
    )


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page; inside ``role="main"`` only, when the page has one."""

    _SKIP = {"script", "style", "head", "title"}
    _BLOCK = {"p", "div", "br", "li", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "dt", "dd", "section", "table"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.all_parts: list[str] = []
        self.main_parts: list[str] = []
        self.skip_depth = 0
        self.main_depth = 0  # > 0 inside the role="main" element (counting nested same-tag opens)
        self.main_tag: str | None = None
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skip_depth += 1
        if self.main_depth:
            if tag == self.main_tag:
                self.main_depth += 1
        elif dict(attrs).get("role") == "main":
            self.main_tag, self.main_depth = tag, 1
        if tag == "pre":
            self.pre += 1
        if tag in self._BLOCK:
            self._emit("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP and self.skip_depth:
            self.skip_depth -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in self._BLOCK:
            self._emit("\n")
        if self.main_depth and tag == self.main_tag:
            self.main_depth -= 1

    def handle_data(self, data):
        if self.skip_depth:
            return
        self._emit(data if self.pre else re.sub(r"[ \t\r\n]+", " ", data))

    def _emit(self, text: str) -> None:
        self.all_parts.append(text)
        if self.main_depth:
            self.main_parts.append(text)

    def text(self) -> str:
        raw = "".join(self.main_parts) if "".join(self.main_parts).strip() else "".join(self.all_parts)
        raw = raw.replace("\u00b6", "")  # Sphinx permalink pilcrows
        raw = re.sub(r"[ \t]+\n", "\n", raw)
        return re.sub(r"\n{3,}", "\n\n", raw).strip() + "\n"


def html_to_text(html: str) -> str:
    """Visible text of an HTML document (see `_TextExtractor`)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def read_text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8", errors="replace")
    return html_to_text(raw) if path.suffix.lower() in (".html", ".htm") else raw


def held_out(relative: str, holdout: float) -> bool:
    """The fixed by-file split rule (see the module docstring)."""
    return int(hashlib.sha256(relative.encode("utf-8")).hexdigest()[:8], 16) / 16**8 < holdout


@dataclass(frozen=True)
class Corpus:
    """Training and held-out bytes (uint8 arrays) and where they came from."""

    train: np.ndarray
    heldout: np.ndarray
    source: str
    files: int
    heldout_files: int
    heldout_starts: np.ndarray | None = None  # byte offset of each held-out document (by-file split)

    def documents(self, starts: np.ndarray, blocks: int = PSEUDO_DOCUMENTS) -> np.ndarray:
        """The document id (0-based) of the held-out bytes at offsets ``starts`` (a window's
        first byte): the held-out page it falls in for a by-file split; for a byte split (one
        text file) the held-out text cut into ``blocks`` equal contiguous blocks, so that
        clustering still groups neighbouring windows."""
        starts = np.asarray(starts, dtype=np.int64)
        if self.heldout_starts is not None and len(self.heldout_starts) > 1:
            return np.searchsorted(np.asarray(self.heldout_starts), starts, side="right") - 1
        block = max(1, -(-self.heldout.size // int(blocks)))
        return starts // block

    def describe(self) -> dict:
        return {
            "source": self.source,
            "files": self.files,
            "heldout_files": self.heldout_files,
            "train_bytes": int(self.train.size),
            "heldout_bytes": int(self.heldout.size),
            "train_sha256": hashlib.sha256(self.train.tobytes()).hexdigest(),
            "heldout_sha256": hashlib.sha256(self.heldout.tobytes()).hexdigest(),
        }


def load_corpus(path: str | Path | None = None, holdout: float = 0.05, min_heldout: int = 0) -> Corpus:
    """Read and split a corpus (see the module docstring); `CorpusError` when absent or empty.

    ``min_heldout``: the fewest held-out bytes the caller needs; a directory split that holds
    out fewer (a handful of files) is refused with a message rather than silently tiny.
    """
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    root = DEFAULT_CORPUS if path is None else Path(path)
    if not root.exists():
        raise CorpusError(missing_message(root))
    if root.is_file():
        data = np.frombuffer(read_text(root).encode("utf-8"), dtype=np.uint8)
        if data.size < 64:
            raise CorpusError(f"corpus {str(root)!r} holds only {data.size} bytes of text; give a larger --corpus")
        cut = int(round(data.size * (1 - holdout)))
        return Corpus(data[:cut].copy(), data[cut:].copy(), str(root), 1, 0)
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        and not any(part.startswith("_") for part in p.relative_to(root).parts[:-1])
        and not p.name.startswith(SKIP_FILES)
    )
    if not files:
        raise CorpusError(
            f"no .html/.txt/.rst/.md files under {str(root)!r}; "
            f"install {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) or give --corpus PATH"
        )
    train, held = [], []
    for p in files:
        rel = p.relative_to(root).as_posix()
        (held if held_out(rel, holdout) else train).append(read_text(p).encode("utf-8"))
    if not held or not train:  # too few files for a by-file split: fall back to bytes
        data = np.frombuffer(b"".join(train + held), dtype=np.uint8)
        cut = int(round(data.size * (1 - holdout)))
        return Corpus(data[:cut].copy(), data[cut:].copy(), str(root), len(files), 0)
    corpus = Corpus(
        np.frombuffer(b"".join(train), dtype=np.uint8).copy(),
        np.frombuffer(b"".join(held), dtype=np.uint8).copy(),
        str(root), len(files), len(held),
        np.cumsum([0] + [len(h) for h in held[:-1]]).astype(np.int64),
    )
    if corpus.heldout.size < min_heldout:
        raise CorpusError(
            f"corpus {str(root)!r} holds out only {corpus.heldout.size} bytes (need {min_heldout}); "
            "give a larger --corpus or a larger --holdout"
        )
    return corpus


def unigram_bits_per_byte(train: np.ndarray, heldout: np.ndarray) -> float:
    """Cross-entropy (bits/byte) of held-out bytes under the training byte frequencies
    (add-one smoothing over the 256 byte values): the baseline a model must beat."""
    counts = np.bincount(train, minlength=256).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[heldout].mean())


def bigram_bits_per_byte(train: np.ndarray, heldout: np.ndarray) -> float:
    """Held-out bits/byte of an add-one smoothed bigram model (previous byte as context)."""
    counts = np.ones((256, 256))
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    logp = np.log2(counts / counts.sum(axis=1, keepdims=True))
    return float(-logp[heldout[:-1], heldout[1:]].mean())
