#!/usr/bin/env python
"""Entry point: `python run.py <subcommand> --help`. Same as the installed `fer-toolkit` command."""

import sys

from fer.cli import main

if __name__ == "__main__":
    sys.exit(main())
