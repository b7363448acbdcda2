"""``python -m detkd.demo`` (``make demo``)."""

from .cli import main

if __name__ == "__main__":
    main()
