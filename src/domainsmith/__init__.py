"""domainsmith: a workbench for building vertical-domain LLMs."""

__version__ = "0.1.0"
