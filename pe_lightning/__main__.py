"""``python -m pe_lightning`` and the ``pe-lightning`` console script: fast help, W&B preload, then the CLI."""

import sys

from pe_lightning.help import print_help, wants_fast_help


def main() -> int:
    """Run the CLI on ``sys.argv``; returns the exit code.

    A help request is answered from the config and the source files (no torch, no Lightning);
    otherwise W&B is imported before torch when the command will start a W&B run
    (:mod:`pe_lightning.preload`), then :func:`pe_lightning.cli.console_main` runs.
    """
    if wants_fast_help(sys.argv[1:]):
        return print_help(sys.argv[1:])
    from pe_lightning.preload import preload_wandb

    preload_wandb(sys.argv[1:])  # before torch: W&B's start costs less with fewer modules loaded (preload.py)
    from pe_lightning.cli import console_main

    return console_main()


if __name__ == "__main__":
    raise SystemExit(main())
