import sys

from pe_lightning.help import print_help, wants_fast_help

if __name__ == "__main__":
    if wants_fast_help(sys.argv[1:]):  # answered from the config and the source files: no torch, no Lightning
        raise SystemExit(print_help(sys.argv[1:]))
    from pe_lightning.preload import preload_wandb

    preload_wandb(sys.argv[1:])  # before torch: W&B's start costs less with fewer modules loaded (preload.py)
    from pe_lightning.cli import console_main

    raise SystemExit(console_main())
