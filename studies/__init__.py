"""Research runners: the loss ablation, the recipe study, the schedule-length question and the cross-dataset matrix.

Tools, not the product: this package is not installed (pyproject installs `fer*` only). Run its scripts from a checkout,
`python studies/<name>.py`; they import `fer`, never the reverse. Shared helpers live in studies/common.py.
"""
