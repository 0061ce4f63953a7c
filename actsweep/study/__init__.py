"""Studies: sweep files → planned runs → the runner (local pool) → run status → reading the runs'
logs → the report's tables and figures, with the published numbers beside ours.

Starts fits as separate `actsweep fit` processes, so it imports no Lightning code at module level;
it may import the training CLI's parser and everything below, never `actsweep.cli`.
"""
