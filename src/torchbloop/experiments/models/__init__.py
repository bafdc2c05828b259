"""Models of the experiment suite."""

from .text import CausalLM, Seq2Seq, count_parameters
from .vision import MLP, ConvNet

__all__ = ["MLP", "CausalLM", "ConvNet", "Seq2Seq", "count_parameters"]
