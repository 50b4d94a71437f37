"""Reporting: runs -> the paper's tables (``posematch-tables``) and the demo's (``scripts/demo.py``).

``runs`` finds run directories and reads their results (``results``, ``metrics``; ``legacy`` for
runs from before ``run.json``), ``tables`` builds the tables and ``render`` writes them.
"""
