"""A text prompt as the routes read it: one text, split into phrases."""

from __future__ import annotations

import re
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


def split_phrases(prompt: str) -> list[str]:
    """'gland, nuclei. stroma' -> ['gland', 'nuclei', 'stroma'] (GroundingDINO separates phrases with '.')."""
    prompt = prompt_text(prompt)
    phrases = [" ".join(p.split()) for p in re.split(r"[.,;\n]+", prompt)]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise PromptsegError("the text prompt is empty; type what to segment, e.g. 'nuclei' or 'gland'")
    return phrases
