"""`python -m reranker.cli`: the same as the `reranker` command."""

from reranker.cli import main

main()
