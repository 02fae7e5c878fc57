"""`python -m gatehouse` runs the command line."""

from gatehouse.entrypoints.launch import main

main()
