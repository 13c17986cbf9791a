"""``python -m corelane``: the command line."""
from corelane.cli import main

main()
