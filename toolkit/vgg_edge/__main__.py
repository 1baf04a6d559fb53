"""`python -m vgg_edge` is the `vgg-edge` command."""

from .cli import main

main()
