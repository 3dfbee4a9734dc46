"""Text made storable: what every database column can hold, whatever an exception or a body contains.

PostgreSQL refuses NUL in text (and ``\\u0000`` in ``jsonb``); no database driver can encode a lone UTF-16
surrogate (``"\\ud800"``), which Python strings may hold after ``json.loads``. Both are replaced with U+FFFD,
the replacement character, so the rest of the text is kept as it was.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str, *, limit: int | None = None) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD; anything else unchanged.

    With ``limit``, text longer than that many characters keeps its first tenth and the rest of the
    allowance from its end (where a traceback names its exception), joined by a line that says so.
    """
    if limit is not None and len(text) > limit:
        head = limit // 10
        cut = f"\n[... {len(text) - limit} characters left out ...]\n"
        text = text[:head] + cut + text[len(text) - (limit - head) :]
    return _UNSTORABLE.sub("\ufffd", text)
