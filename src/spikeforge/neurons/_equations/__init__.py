"""Parsing, unit checking and compiling for ``spikeforge.neurons.from_equations``."""
