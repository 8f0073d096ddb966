"""The state file a running Flow keeps for ``meshflow status``."""

from __future__ import annotations

import json
import os
import threading

from meshflow.flow.status import write_state


def test_two_threads_writing_the_state_never_collide(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "run", "flow.json")
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(200):
                write_state(path, {"writer": tag, "i": i})
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["writer"] in "ab" and data["i"] == 199
    assert os.listdir(os.path.dirname(path)) == ["flow.json"]  # no temporary file left
    assert os.stat(path).st_mode & 0o777 == 0o644
