"""Hooks on fairseq's tasks: ``sentence_prediction`` (and so ``sentence_prediction_npu``, its subclass) checks
``--num-classes`` against its label dictionary (fairseq_npu/data_checks/num_classes.py) and each dict.txt it opens
(fairseq_npu/data_checks/data_dir.py)."""

from fairseq_npu.data_checks.data_dir import check_dictionary_file
from fairseq_npu.data_checks.num_classes import check_num_classes


def sentence_prediction_init(original):
    def __init__(self, cfg, data_dictionary, label_dictionary):
        original(self, cfg, data_dictionary, label_dictionary)
        check_num_classes(cfg, label_dictionary)

    return __init__


def sentence_prediction_load_dictionary(original):
    def load_dictionary(filename):  # a classmethod: ``original`` is bound, and cls is unused by stock
        check_dictionary_file(filename)
        return original(filename)

    return load_dictionary
