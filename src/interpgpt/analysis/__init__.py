"""Analyses of one model or a matched pair; each module is one analysis with one entry point."""
