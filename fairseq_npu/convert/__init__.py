"""Checkpoint converters: Hugging Face ALBERT / RoBERTa (and lonePatient ``bert.``-named ALBERT) -> fairseq, and back.

``fairseq-npu-convert`` (cli.py) is the command line; ``albert.py`` and ``roberta.py`` hold the name and layout
maps, ``source.py`` reads the source directory and ``checkpoint.py`` writes what fairseq's ``--restore-file``
and ``from_pretrained`` load. ``fairseq-npu-export`` (export.py) runs the same maps backwards, from a fairseq
checkpoint to a Hugging Face directory; ``hf_tokenizer.py`` writes its tokenizer files.
"""

from .errors import ConversionError  # noqa: F401
