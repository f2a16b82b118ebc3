"""Research scripts whose findings are in docs/findings.md and docs/two-stage.md, run from the checkout as
``python -m experiments.<name>``; each appends one line per trained cell to its CSV beside it.

- ``tiny_search``: the search for tiny-grid settings where P helps (``tiny_search_trials.csv``);
- ``stage2_search``: the search over stage-2 settings of two-stage training (``stage2_search_trials.csv``).
"""
