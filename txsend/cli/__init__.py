"""The command line: the Typer app (app.py) and its commands, grouped by what they do."""
