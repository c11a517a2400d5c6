"""InterpGPT: matched-pair mechanistic interpretability.

Two small transformers with one architecture, seed and recipe are trained on two
versions of one corpus (standard and ADHD-style task decompositions); the
analyses in this package find out, causally and with statistics, how their
internals differ. Each pipeline stage is one module and talks to the next
through files on disk.
"""

__version__ = "0.1.0"
