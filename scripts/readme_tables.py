"""The README's tables of error codes and `mlx` exit codes, written from `errors.ERROR_TABLE`.

    python scripts/readme_tables.py           # rewrite the tables in README.md
    python scripts/readme_tables.py --check   # exit 1 when README.md differs (a unit test runs it)

Each table stands between `<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md, so the
README cannot drift from the one table the service, the SDK and the CLI are derived from.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mlx_platform.errors import ERROR_TABLE, ExitCode

README = Path(__file__).resolve().parent.parent / "README.md"

# What each exit code means besides the codes that end in it (the codes come from the table).
EXIT_MEANINGS = {
    ExitCode.OK: "done",
    ExitCode.ERROR: "any other failure (an answer that is not the API's)",
    ExitCode.INVALID_INPUT: "invalid input: a bad option or file, no token",
    ExitCode.NOT_FOUND: "not found",
    ExitCode.CONFLICT: "conflict; also `validate` of a composition that is not valid",
    ExitCode.NOT_ALLOWED: "not allowed",
    ExitCode.PLUGIN_FAILED: "the plugin failed; also `register` of a plugin whose class cannot "
    "be loaded (recorded with status error)",
    ExitCode.UNREACHABLE: "the service cannot be reached (refused, timed out) or says to try "
    "again later",
}


def error_codes() -> str:
    rows = ["| code | HTTP | the SDK retries | `mlx` exits | when |", "|---|---|---|---|---|"]
    for spec in ERROR_TABLE:
        retry = "yes (idempotent calls, after `Retry-After`)" if spec.retryable else "no"
        rows.append(
            f"| `{spec.code}` | {spec.http_status} | {retry} | {int(spec.exit_code)} "
            f"| {spec.description} |"
        )
    return "\n".join(rows)


def exit_codes() -> str:
    rows = ["| exit code | meaning |", "|---|---|"]
    for code in ExitCode:
        codes = [f"`{s.code}`" for s in ERROR_TABLE if s.exit_code == code]
        meaning = EXIT_MEANINGS[code] + (f": {', '.join(codes)}" if codes else "")
        rows.append(f"| {int(code)} | {meaning} |")
    return "\n".join(rows)


TABLES = {"error-codes": error_codes, "exit-codes": exit_codes}


def render(text: str) -> str:
    """`text` with every marked table written afresh."""
    for name, build in TABLES.items():
        pattern = re.compile(
            rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", flags=re.DOTALL
        )
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end -->")
        table = build()
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's tables differ from errors.ERROR_TABLE: run scripts/readme_tables.py")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
