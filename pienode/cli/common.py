"""What every command shares: one JSON document or readable text on stdout, logs on
stderr, and a one-line error (no traceback) with a non-zero exit for user errors."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pienode.errors import PieError


def emit(result: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        sys.stdout.write((human(result) if human else _default_human(result)) + "\n")
    sys.stdout.flush()


def _default_human(result: Any) -> str:
    if isinstance(result, dict):
        width = max((len(k) for k in result), default=0)
        return "\n".join(f"{k:<{width}}  {_short(v)}" for k, v in result.items())
    return str(result)


def _short(v: Any) -> str:
    if isinstance(v, (dict, list)):
        text = json.dumps(v, sort_keys=True)
        return text if len(text) < 120 else text[:117] + "..."
    return str(v)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def run_command(fn: Callable[[], Any]) -> int:
    """Run a command body; map every expected failure to one line on stderr."""
    try:
        result = fn()
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except PieError as exc:
        return fail(exc.message)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except (OSError, ValueError) as exc:
        return fail(str(exc) or type(exc).__name__)
