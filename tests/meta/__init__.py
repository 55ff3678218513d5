"""Tests of what Meta documents: one test per rule, each naming its source in its docstring."""
