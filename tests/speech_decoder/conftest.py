from __future__ import annotations

import pytest
import torch

from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny dims gain nothing from threads, and OpenMP spinning on a shared 2-core CI box costs 10-100x.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> CosyVoiceModel:
    return CosyVoiceModel.load(write_cosyvoice_folder(tmp_path_factory.mktemp("cv"), "tiny"))
