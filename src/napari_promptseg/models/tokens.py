"""How much of a prompt a text encoder reads: CLIP (CLIPSeg) reads 77 tokens, the sentence model of the library route
256; the tokenizers cut what is longer without a word. :func:`cut_text` says what was kept, so the user can be told."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CutText:
    """A text longer than a model's token limit and what of it the model reads."""

    text: str
    tokens: int  # the text's tokens, the model's special tokens ([CLS], <|startoftext|>, ...) counted
    limit: int  # the tokens the model reads
    kept: str  # the start of the text that fits, as the tokenizer decodes it (lower case for an uncased model)

    def warning(self, model: str) -> str:
        """One sentence naming the prompt, the limit and where the cut fell."""
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        tail = self.kept if len(self.kept) <= 40 else "..." + self.kept[-37:]
        words = f"{len(self.kept.split())} of its {len(self.text.split())} words"
        return (
            f"the prompt {shown!r} is {self.tokens} tokens long and {model} reads {self.limit}: it was cut after "
            f"{tail!r} ({words} kept); the rest had no effect"
        )


def cut_text(tokenizer, text: str, limit: int) -> CutText | None:
    """What ``tokenizer`` (a transformers tokenizer) keeps of ``text`` when it truncates at ``limit`` tokens (special
    tokens counted, as ``truncation=True, max_length=limit`` does); None when the whole text fits."""
    # verbose=False: no transformers warning about the model's maximum for a long text
    ids = tokenizer(text, truncation=False, verbose=False)["input_ids"]
    if len(ids) <= limit:
        return None
    room = max(limit - tokenizer.num_special_tokens_to_add(), 0)
    try:  # a fast tokenizer maps its tokens to the text's characters: the kept part as the user typed it
        spans = tokenizer(text, verbose=False, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        kept = text[: spans[room - 1][1]] if room else ""
    except NotImplementedError:  # a slow (Python) tokenizer: the kept tokens decoded (lower case, spacing its own)
        content = tokenizer(text, truncation=False, verbose=False, add_special_tokens=False)["input_ids"]
        kept = tokenizer.decode(content[:room], skip_special_tokens=True)
    return CutText(text=text, tokens=len(ids), limit=limit, kept=" ".join(kept.split()))


#: per model (loaded once per process), the texts already checked against its token limit
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_checked_lock = threading.Lock()


def cut_warnings(model: object, what: str, texts: Sequence[str], *, once_per_process: bool = True) -> list[str]:
    """A warning (:meth:`CutText.warning`, the model called ``what``) per text longer than ``model`` reads (its
    ``cut_prompt(text)``; a model without one is not checked). ``once_per_process``: each text is checked once per
    model, so a loop's or a widget's first image says it and the images after it are not told again; a run that says
    it once itself (the CLI's batch, whose Dask workers are processes of their own) checks with False."""
    cut_prompt = getattr(model, "cut_prompt", None)
    if cut_prompt is None:
        return []
    new = list(dict.fromkeys(texts))
    if once_per_process:
        with _checked_lock:
            checked = _checked.setdefault(model, set())
            new = [t for t in new if t not in checked]
            checked.update(new)
    return [cut.warning(what) for cut in map(cut_prompt, new) if cut is not None]
