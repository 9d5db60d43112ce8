"""The OS errors that mean a disk refuses more bytes, spelled once for every place that decides so (a weights
download, a batch that stops at the first input meeting them, the CLI's one-line error). Imports nothing of
the package, so any module can use it."""

from __future__ import annotations

import errno

#: no room left: the disk is full, or the user's quota is (EDQUOT: absent on a platform without quotas)
NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
#: the file system was mounted, or remounted after an error, read-only: no write there will pass either
READ_ONLY = frozenset({errno.EROFS})
#: an output folder's disk that takes nothing more: every later write of the run would meet the same error
OUTPUT_DISK_REFUSES = NO_SPACE | READ_ONLY
