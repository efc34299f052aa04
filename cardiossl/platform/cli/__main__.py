"""``python -m cardiossl.platform.cli``: the ``cardiossl`` command."""

from . import main

main()
