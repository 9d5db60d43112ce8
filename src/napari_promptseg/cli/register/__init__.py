"""`promptseg register`: Tell2Reg regions and/or SimpleITK intensity registration.

Modules by job: :mod:`.command` (the run), :mod:`.inputs` (the images, prompts and labels, checked),
:mod:`.outputs` (an earlier run's files in -o: replaced or removed only when they are promptseg's).
"""

from .command import cmd_register, register_settings
from .outputs import ANNOTATIONS_WARPED, LABELS_WARPED

__all__ = ["ANNOTATIONS_WARPED", "LABELS_WARPED", "cmd_register", "register_settings"]
