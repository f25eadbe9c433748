"""A small byte-level CLIP BPE tokenizer built locally (no download).

Stable Diffusion's tokenizer is CLIP's byte-level BPE. For tests and for the bundled model we learn a small
BPE vocabulary of the same format from a corpus of landscape-painting words, so the real ``CLIPTokenizer``
code path (``vocab.json`` + ``merges.txt``) is exercised end to end.
"""

from __future__ import annotations

import collections
import json
from functools import lru_cache
from pathlib import Path

SPECIAL = ("<|startoftext|>", "<|endoftext|>")

LANDSCAPE_CORPUS = """
mountains mountain peaks peak ridge ridges cliff cliffs hills valley dense light fog mist misty haze clouds
cloud drifting red sun moon sunset sunrise rising setting boat boats sailing on the lake river water
waterfall flying birds bird pines pine trees tree rain falling snow ink wash painting landscape chinese
traditional scroll hand pan camera moving slowly a an and with of in over under far near distant pale dark
village bridge temple pavilion fisherman shore reflection reflections shimmering calm spring autumn winter
summer night evening morning dawn dusk sky empty quiet bamboo rocks stone path wind gentle flowing stream
""".split()


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def learn_bpe(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE merges over a word list (each word ends with ``</w>`` on its last symbol)."""
    byte_map = bytes_to_unicode()
    vocab = collections.Counter()
    for w in words:
        symbols = [byte_map[b] for b in w.lower().encode("utf-8")]
        symbols[-1] += "</w>"
        vocab[tuple(symbols)] += 1
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for word, freq in vocab.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += freq
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new_vocab = collections.Counter()
        for word, freq in vocab.items():
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_vocab[tuple(out)] += freq
        vocab = new_vocab
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges] + list(SPECIAL)
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def write_tokenizer(folder: str | Path, corpus: list[str] | None = None, num_merges: int = 400,
                    max_length: int = 77) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` for a ``CLIPTokenizer``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_bpe(corpus or LANDSCAPE_CORPUS, num_merges)
    (folder / "vocab.json").write_text(json.dumps(build_vocab(merges), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                       encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
        "bos_token": SPECIAL[0], "eos_token": SPECIAL[1], "pad_token": SPECIAL[1], "unk_token": SPECIAL[1],
    }, indent=2))
    return folder


def load_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


