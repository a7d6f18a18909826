"""Model analysis: parameters, memory and operations by bit-width (``onebit summary``)."""
from onebit.analysis.summary import LayerSummary, Summary, summary

__all__ = ["LayerSummary", "Summary", "summary"]
