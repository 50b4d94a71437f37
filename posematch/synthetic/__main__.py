"""``python -m posematch.synthetic --out DIR --train N --val M ...``."""

from posematch.synthetic.cli import main

main()
