# `make bench`: ratios measured side by side, never a CI gate. See __main__.py.
