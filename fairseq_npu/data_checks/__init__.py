"""Checks of a sentence-prediction data directory, run before fairseq opens its files: its layout and dictionaries
(``data_dir``), and ``--num-classes`` against its label dictionary (``num_classes``). Each failure is one UsageError
naming the file. Not a fairseq registry: nothing here registers anything."""
