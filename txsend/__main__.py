"""python -m txsend."""

from txsend.cli.quick import main

main()
