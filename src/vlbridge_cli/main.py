"""Entry point of the ``vlbridge`` command: dispatches to one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Adding a subcommand is one module and one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vlbridge.allocator import keep_freed_memory
from vlbridge.errors import VLBridgeError

# name -> module (imported lazily so `vlbridge --help` stays fast and one broken optional
# dependency does not take down unrelated subcommands)
COMMANDS: dict[str, str] = {
    "data": "vlbridge_cli.data",
    "train": "vlbridge_cli.train",
    "eval": "vlbridge_cli.evaluate",
    "generate": "vlbridge_cli.generate",
    "info": "vlbridge_cli.info",
    "score": "vlbridge_cli.score",
    "demo": "vlbridge_cli.demo",
    "analyze": "vlbridge_cli.analyze",
    "export": "vlbridge_cli.export",
    "serve": "vlbridge_cli.serve",
    "report": "vlbridge_cli.report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlbridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # subcommand not built yet
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse rejects unknown options
    keep_freed_memory()  # tensors freed in one training step are reused by the next, not page-faulted again
    try:
        return int(args.run(args) or 0)
    except VLBridgeError as error:
        print(f"vlbridge {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
