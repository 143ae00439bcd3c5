"""`python -m bench`: the mirror measured against nginx and the CNCF registry on this machine.

The program starts every server it needs on free loopback ports, runs the phases, prints one
table of medians and ratios measured in the same run, and writes the raw numbers to
`bench/results.json`. It reports; it never asserts a timing.
"""
