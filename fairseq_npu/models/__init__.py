"""fairseq_npu's models: importing this package imports (and so registers) every module in it."""

from fairseq_npu.registry_imports import import_all_modules

import_all_modules(__name__, __path__)
