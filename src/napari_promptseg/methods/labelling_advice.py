"""Advice on how a reference (or library exemplar) was labelled. numpy-free and torch-free: the CLI's driver
process, which never loads a model, says it too."""

from __future__ import annotations

#: fewer exemplar objects than this get a strongly regularised classifier, and the advice below
FEW_EXEMPLARS = 10


def few_labels_warning(objects: int, partial: bool, remedy: str, name: str = "the reference") -> str | None:
    """What to tell a user whose reference labels ``objects`` < ``FEW_EXEMPLARS`` objects without saying the labels
    are partial: every unlabelled pixel is taught as background, so the objects left unlabelled in it teach "not an
    object" (3 nuclei of 50 labelled: nothing found in another image). ``remedy``: how to say the labels are partial
    where the user is (a flag, a checkbox). None when there is nothing to say."""
    if partial or objects >= FEW_EXEMPLARS:
        return None
    return (
        f"{name} labels only {objects} object(s), and every unlabelled pixel of it is taught as background; if it "
        f"holds more objects like them, label them all, or {remedy}"
    )
