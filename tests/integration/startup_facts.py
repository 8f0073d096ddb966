"""An executor reporting what a process sets up once at start-up (its time zone, its
locale): a forked process must see its own, as a fresh one does."""

from __future__ import annotations

import gc
import locale
import sys
import time
from typing import Any

from meshflow import DocumentArray, Executor, requests


class StartUpFacts(Executor):
    """Answers in ``tags[<deployment name>]``."""

    @requests
    def facts(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            d.tags[self.runtime_args.name] = dict(
                replica=self.runtime_args.replica_id,
                frozen=gc.get_freeze_count(),  # only a forked process has any
                zone=time.strftime("%Z %z", time.localtime(86400 * 180)),
                tzname=list(time.tzname),
                ctype=locale.setlocale(locale.LC_CTYPE),
                utf8_mode=sys.flags.utf8_mode,
            )
