"""Write a converted model as fairseq writes its own: ``model.pt`` (cfg + model + training-state stubs) + ``dict.txt``.

The checkpoint holds only what fairseq_npu.checkpoint_loading allowlists (tensors, dicts, lists, strings,
numbers), so fairseq loads it with ``weights_only=True``. Its cfg is a real fairseq configuration (parsed by
fairseq's own option parser) for ``--task masked_lm``, like the published roberta.base ``model.pt``; that is what
``from_pretrained`` rebuilds. ``--restore-file`` uses the model weights only, with whatever task is trained.
"""

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

PLUGIN_DIR = str(Path(__file__).resolve().parents[1])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def fairseq_cfg(arch: str, options: dict, data: str = ".") -> dict:
    """A complete fairseq cfg (plain nested dict) for ``arch`` with these model options, task masked_lm."""
    from fairseq import options as fairseq_options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    argv = [data, "--user-dir", PLUGIN_DIR, "--task", "masked_lm", "--criterion", "masked_lm", "--arch", arch,
            "--tokens-per-sample", str(options["max_positions"]), "--cpu"]
    for k, v in options.items():
        argv += [_flag(k), str(v)]
    with warnings.catch_warnings():  # hydra's deprecation chatter from fairseq's config machinery
        warnings.simplefilter("ignore")
        args = fairseq_options.parse_args_and_arch(fairseq_options.get_training_parser(), argv)
        cfg = convert_namespace_to_omegaconf(args)
    return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def checkpoint_state(model_state: Dict[str, torch.Tensor], cfg: dict, converted_from: str) -> dict:
    return {
        "cfg": cfg,
        "model": {k: v.detach().contiguous().clone() for k, v in model_state.items()},
        # what fairseq's trainer reads on --restore-file; no optimizer state, so none is restored
        "optimizer_history": [
            {"criterion_name": "MaskedLmLoss", "optimizer_name": "none", "lr_scheduler_state": {"best": None},
             "num_updates": 0}
        ],
        "last_optimizer_state": None,
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}, "converted_from": converted_from},
    }


def write_directory(dest, checkpoint: dict, text_files: Optional[Dict[str, List[str]]] = None,
                    copies: Optional[Dict[str, Path]] = None, overwrite: bool = False) -> Path:
    """Write ``model.pt`` and the extra files into ``dest``: staged in a temporary directory, then moved in.

    An interrupted run leaves ``dest`` as it was; ``model.pt`` is moved last, so its presence means complete.
    """
    dest = Path(dest)
    names = ["model.pt", *(text_files or {}), *(copies or {})]
    if not overwrite:
        existing = [n for n in names if (dest / n).exists()]
        if existing:
            raise FileExistsError(f"{dest / existing[0]} exists; pass --overwrite to replace it")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest))
    try:
        for name, lines in (text_files or {}).items():
            with open(staging / name, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        for name, src in (copies or {}).items():
            shutil.copyfile(src, staging / name)
        torch.save(checkpoint, staging / "model.pt")
        for name in names[1:] + ["model.pt"]:
            os.replace(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest / "model.pt"
