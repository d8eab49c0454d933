"""`python -m malenia.server [serve options]`: what the engine-process manager starts. Only
the server's own options are parsed here, so start-up does not import the other commands."""

from __future__ import annotations

import argparse
import sys

from malenia.errors import MaleniaError
from malenia.server.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m malenia.server")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args) or 0)
    except MaleniaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
