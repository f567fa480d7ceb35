"""The shared opening of the converters' commands (fairseq-npu-convert, fairseq-npu-export): quiet logging, the
parsed flags, and input a user must fix (an unknown tensor, a missing vocabulary, an existing DEST) as one line
``PROG: error: ...`` and exit status 2 instead of a traceback."""

import functools
import sys

from fairseq_npu import albert_vocab
from fairseq_npu.quiet_logs import quiet_cli_logging

from .errors import ConversionError

USER_ERRORS = (ConversionError, albert_vocab.AlbertVocabError, FileExistsError)
ERROR_STATUS = 2  # as argparse (and the plugin's other commands) exit for input a user must fix


def converter_command(prog, get_parser):
    """Decorate ``main(args) -> exit status`` into the console script's ``cli_main(argv=None)``."""

    def decorate(main):
        @functools.wraps(main)
        def cli_main(argv=None):
            quiet_cli_logging()
            args = get_parser().parse_args(argv)
            try:
                return main(args)
            except USER_ERRORS as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                return ERROR_STATUS

        return cli_main

    return decorate
