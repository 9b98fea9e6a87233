"""python -m txsend."""

from txsend.cli.main import main

main()
