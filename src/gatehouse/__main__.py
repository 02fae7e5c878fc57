"""`python -m gatehouse` runs the command line."""

from gatehouse.entrypoints.cli import main

main()
