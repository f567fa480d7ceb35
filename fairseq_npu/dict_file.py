"""fairseq ``dict.txt`` files: the first line that fairseq's ``Dictionary.load`` would refuse, as ``file:line``.

``Dictionary.load`` answers bytes that are not UTF-8 with a bare ``Exception`` naming no line, and a malformed
line with a ValueError quoting it but not its number. The preprocessor (``--vocab-dir``) and the training task
(``input0/dict.txt``, ``label/dict.txt``) ask here first. A leaf module (standard library only).
"""

from pathlib import Path
from typing import Optional

OVERWRITE = "#fairseq:overwrite"  # the flag that lets a line redefine a symbol
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # in every fairseq Dictionary before its file is read


def dict_file_problem(path) -> Optional[str]:
    """``FILE:LINE: not a fairseq dict.txt (reason)`` for the first bad line of ``path``; None if it reads."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"{path}: cannot read the dictionary ({err.strerror or err})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return f"{path}:{line}: not a fairseq dict.txt (byte 0x{data[bad.start]:02x} is not UTF-8 text)"
    seen = set(SPECIALS)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as text-mode readlines() splits
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        word, _, count = line.rstrip().rpartition(" ")
        overwrite = count == OVERWRITE
        if overwrite:
            word, _, count = word.rpartition(" ")
        if not word or not count.lstrip("-").isdigit():
            return f"{path}:{number}: not a fairseq dict.txt (expected '<token> <count>', got {line[:40]!r})"
        if word in seen and not overwrite:
            return f"{path}:{number}: not a fairseq dict.txt (duplicate word {word!r})"
        seen.add(word)
    return None
