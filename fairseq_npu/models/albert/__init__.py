"""ALBERT (Lan et al., 2020) for fairseq: model ``albert``, archs ``albert_base`` .. ``albert_xxlarge``, hub interface."""

from .model import SENTENCE_ORDER_HEAD, AlbertModel  # noqa: F401  (registers the model and its architectures)
