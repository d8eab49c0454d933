"""The `malenia` console script. Each sub-command lives beside the code it drives and
exposes ``register(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import sys

from malenia import __version__
from malenia.errors import MaleniaError

# (module, purpose). A module registers one or more sub-commands.
COMMAND_MODULES: tuple[str, ...] = (
    "malenia.attributes.cli",  # attributes list|presets|parse
    "malenia.synth.cli",  # synth
    "malenia.train",  # train
    "malenia.inference.cli",  # segment, find, info
    "malenia.evaluation",  # eval, calibrate
    "malenia.server.cli",  # serve
    "malenia.viewer.cli",  # view
)
# Sub-command -> its module: a command imports only its own module, so `malenia segment`
# checks its inputs before torch is imported (the training module alone takes ~10 s).
COMMANDS: dict[str, str] = {
    "attributes": "malenia.attributes.cli",
    "synth": "malenia.synth.cli",
    "train": "malenia.train",
    "segment": "malenia.inference.cli",
    "find": "malenia.inference.cli",
    "info": "malenia.inference.cli",
    "eval": "malenia.evaluation",
    "calibrate": "malenia.evaluation",
    "serve": "malenia.server.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="malenia",
        description="Zero-shot CT lesion segmentation from lesion attributes (Malenia).",
    )
    parser.add_argument("--version", action="version", version=f"malenia {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # that part of the engine is not installed in this checkout
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except MaleniaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
