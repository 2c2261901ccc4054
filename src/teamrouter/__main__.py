"""`python -m teamrouter` is the CLI."""

from teamrouter.cli import main

main()
