"""Read a Hugging Face style model directory: config.json plus model.safetensors / pytorch_model.bin (or shards)."""

import json
import struct
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from fairseq_npu.checkpoint_loading import CheckpointLoadError, verify_checkpoint_file

from .errors import ConversionError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: not found (a Hugging Face model directory has config.json)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def _safetensors_damage(path: Path) -> Optional[str]:
    """Why a .safetensors file is cut short or unreadable, or None. The format has no checksum: a file damaged in
    place without a change of size is not detected (docs/checkpoints.md)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"the file ends after {len(head)} bytes, inside its header"
        header_bytes = struct.unpack("<Q", head)[0]
        if 8 + header_bytes > size:
            return f"truncated: {size} bytes, its header alone announces {8 + header_bytes}"
        try:
            header = json.loads(f.read(header_bytes))
        except (UnicodeDecodeError, ValueError):
            return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2 and isinstance(v["data_offsets"][1], int)]
    expected = 8 + header_bytes + max(ends, default=0)
    if size < expected:
        return f"truncated: {size} bytes, its header describes {expected}"
    return None


def _load_file(path: Path) -> Dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        damage = _safetensors_damage(path)
        if damage is not None:
            raise ConversionError(f"{path}: {damage}")
        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as err:
            raise ConversionError(f"{path}: cannot be read as safetensors ({err})") from None
    try:
        verify_checkpoint_file(path)  # CRCs of the zip archive: torch would read a damaged tensor without a word
    except CheckpointLoadError as err:
        raise ConversionError(str(err)) from None
    try:
        # weights only: a model file is tensors in a dict; anything else is refused rather than executed
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt/unsafe files
        raise ConversionError(f"{path}: cannot be read as a tensor dictionary ({str(err).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a dictionary of tensors")
    return dict(state)


def read_weights(directory: Path) -> Tuple[Dict[str, torch.Tensor], Path]:
    """All tensors of the directory's checkpoint (single file or index + shards), and the file they came from."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return _load_file(directory / name), directory / name
    for name in INDEX_FILES:
        index_path = directory / name
        if index_path.is_file():
            with open(index_path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(_load_file(directory / shard))
            return state, index_path
    raise ConversionError(f"{directory}: no {' or '.join(WEIGHT_FILES)} (nor a sharded index) found")


def read_directory(directory) -> Tuple[dict, Dict[str, torch.Tensor], Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ConversionError(f"{directory}: not a directory")
    config = read_config(directory)
    weights, weights_path = read_weights(directory)
    return config, weights, weights_path
