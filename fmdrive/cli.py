"""The `fmdrive` command (placeholder until the subcommands land)."""
import sys


def main(argv=None):
    print('fmdrive: no subcommands yet', file=sys.stderr)
    return 2
