"""A text prompt as the routes read it: one text, split into phrases."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from ...errors import PromptsegError


def prompt_text(prompt: str | Sequence[str]) -> str:
    """A prompt as one text: a list of phrases (as :func:`~..registration.register` takes them) joined with ', '.
    Anything else is refused by name (a list, None or a number failed deep in a regular expression, "expected
    string or bytes-like object")."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and all(isinstance(phrase, str) for phrase in prompt):
        return ", ".join(prompt)
    raise PromptsegError(
        f"the text prompt must be text, e.g. 'nuclei' (or 'gland, nuclei', ['gland', 'nuclei'] for two); got "
        f"{type(prompt).__name__} {prompt!r}"
    )


#: longest prompt a message quotes whole: a pasted description made each warning a paragraph, repeated
SAID_PROMPT_CHARS = 60


def said_prompt(prompt: str | Sequence[str]) -> str:
    """The prompt as a message quotes it (repr): whole when short, else its start and '...'."""
    text = " ".join(prompt_text(prompt).split())
    if len(text) <= SAID_PROMPT_CHARS:
        return repr(text)
    return repr(text[:SAID_PROMPT_CHARS].rstrip()) + f"... ({len(text)} characters)"


#: what separates phrases: GroundingDINO's '.', commas, semicolons, new lines, and their CJK forms (a Chinese or
#: Japanese prompt's '，' or '。' left its phrases one)
_SEPARATORS = re.compile(r"[.,;\n，。；、]+")
#: dots that separate nothing: a number's ('1.5 um') and a dotted abbreviation's ('e.g.', 'i.e.')
_KEPT_DOTS = re.compile(r"(?<=\d)\.(?=\d)|\b(?:[^\W\d_]\.){2,}")
_KEPT_DOT = "\ue000"  # a private-use character: no prompt types it


def split_phrases(prompt: str) -> list[str]:
    """'gland, nuclei. stroma' -> ['gland', 'nuclei', 'stroma'] (GroundingDINO separates phrases with '.'); a
    number's or an abbreviation's dot is kept ('1.5 um nuclei', 'e.g. nuclei': they were split into '1' and '5 um
    nuclei', 'e', 'g' and 'nuclei', each sought as an object); a phrase typed twice, whatever its case, is one."""
    prompt = _KEPT_DOTS.sub(lambda m: m.group().replace(".", _KEPT_DOT), prompt_text(prompt))
    phrases: dict[str, str] = {}
    for part in _SEPARATORS.split(prompt):
        # a pasted control character is a space (it stayed in the phrase the models saw)
        spaced = "".join(" " if unicodedata.category(c) == "Cc" else c for c in part.replace(_KEPT_DOT, "."))
        phrase = " ".join(spaced.split())
        if phrase:
            phrases.setdefault(phrase.casefold(), phrase)
    if not phrases:
        raise PromptsegError("the text prompt is empty; type what to segment, e.g. 'nuclei' or 'gland'")
    return list(phrases.values())
