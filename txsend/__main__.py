"""python -m txsend."""

from txsend.cli import main

main()
