"""`python cli.py …` does what the installed `qval …` console script does."""

from qval.cli import main

if __name__ == "__main__":
    main()
