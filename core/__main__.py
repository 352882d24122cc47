"""``python -m meshconnect``."""

from .cli import main

main()
