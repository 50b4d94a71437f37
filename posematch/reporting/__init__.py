"""Reporting: runs -> the paper's tables (``posematch-tables``) and the demo's (``scripts/demo.py``).

``runs`` finds run directories and reads their results from their ``run.json`` (``results``,
``metrics``), ``tables`` builds the tables and ``render`` writes them.
"""
