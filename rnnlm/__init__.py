"""rnnlm: character-level recurrent language models in PyTorch."""

__version__ = "0.1.0"
