"""The ``medclass`` command line: a thin layer over :mod:`medclass.api` and the engines.

Commands live one group per module (:mod:`.catalog`, :mod:`.run`, :mod:`.pretrain`, :mod:`.data`, :mod:`.explain`,
:mod:`.deploy`, :mod:`.node`, :mod:`.federate`).
Messages go through :mod:`logging` to stderr (``-v`` more, ``-q`` less), results to stdout. A user error prints one
line on stderr naming the file and the problem and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from medclass import __version__
from medclass.cli.common import HelpFormatter, cli_logging, verbosity_parent
from medclass.errors import MedclassError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medclass`` command."""
    from medclass.cli.catalog import add_catalog_commands
    from medclass.cli.data import add_data_commands
    from medclass.cli.deploy import add_deploy_commands
    from medclass.cli.explain import add_explain_command
    from medclass.cli.federate import add_federate_command
    from medclass.cli.node import add_node_command
    from medclass.cli.pretrain import add_pretrain_command
    from medclass.cli.run import add_run_commands

    p = argparse.ArgumentParser(
        prog="medclass",
        description="Medical image classification on a plain CPU: train, evaluate, explain and deploy.",
        epilog="Run 'medclass COMMAND -h' for a command's options.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"medclass {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    parents = [verbosity_parent()]
    add_catalog_commands(sub, parents, HelpFormatter)
    add_run_commands(sub, parents, HelpFormatter)
    add_pretrain_command(sub, parents, HelpFormatter)
    add_federate_command(sub, parents, HelpFormatter)
    add_data_commands(sub, parents, HelpFormatter)
    add_explain_command(sub, parents, HelpFormatter)
    add_deploy_commands(sub, parents, HelpFormatter)
    add_node_command(sub, parents, HelpFormatter)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for user errors). With no command, prints the help."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for a command that relaunches itself
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with cli_logging(verbose=args.verbose, quiet=args.quiet):
            return args.func(args)
    except MedclassError as err:
        print(f"medclass: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medclass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
