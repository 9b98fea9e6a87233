"""python -m txsend."""

from txsend.cli.app import main

main()
