"""Hooks on fairseq's tasks: ``sentence_prediction`` (and so ``sentence_prediction_npu``, its subclass) checks
``--num-classes`` against its label dictionary (fairseq_npu/data_checks/num_classes.py), each dict.txt it opens
(fairseq_npu/data_checks/data_dir.py) and the binarized files of each split it loads
(fairseq_npu/data_checks/binarized.py); every task names a sentence too long for the model in one line
(fairseq_npu/data_checks/sentence_lengths.py)."""

from fairseq_npu.data_checks.binarized import check_split
from fairseq_npu.data_checks.data_dir import check_dictionary_file
from fairseq_npu.data_checks.num_classes import check_num_classes
from fairseq_npu.data_checks.sentence_lengths import check_lengths


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


def sentence_prediction_load_dataset(original):
    def load_dataset(self, split, combine=False, **kwargs):
        check_split(self, split)
        return original(self, split, combine=combine, **kwargs)

    return load_dataset


def filter_indices_by_size(original):
    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        if not ignore_invalid_inputs and max_positions is not None:
            check_lengths(self, indices, dataset, max_positions)
        return original(self, indices, dataset, max_positions, ignore_invalid_inputs)

    return filter_indices_by_size
