"""Step-1's sentencepiece tokenizer (LlamaTokenizer layout, add_bos) with <|BOT|>, <|EOT|> and <audio_N>.

Ids: <pad> 0, <s> 1 (bos), </s> 2, <|EOT|> 3 (the LM's eos), <|BOT|> 4, <unk> 5, then text pieces. <audio_N> is a
user-defined piece at id audio_offset + N (audio_offset 65536 for the real vocab, so vq02 code c -> 65536 + c and
vq06 code c -> 65536 + 1024 + c); the tiny test checkpoints use a smaller offset, read from the model itself.
"""
from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from model_files.native import native_name

BOT = "<|BOT|>"
EOT = "<|EOT|>"


class Step1Tokenizer:
    def __init__(self, sp: spm.SentencePieceProcessor) -> None:
        self.sp = sp
        self.bos_id = sp.bos_id()
        self.eot_id = sp.piece_to_id(EOT)
        self.bot_id = sp.piece_to_id(BOT)
        self.audio_offset = sp.piece_to_id("<audio_0>")
        if self.audio_offset == sp.unk_id():
            self.audio_offset = -1  # a tokenizer without audio tokens

    @classmethod
    def from_dir(cls, path: Path | str) -> Step1Tokenizer:
        file = Path(path) / "tokenizer.model"
        try:
            with native_name(file) as name:
                return cls(spm.SentencePieceProcessor(model_file=name))
        except (RuntimeError, OSError) as exc:  # sentencepiece's message does not name the file
            raise OSError(f"{file}: not a sentencepiece model ({exc})") from exc

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids: list[int] = self.sp.encode(text)
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        return str(self.sp.decode(ids))

    def audio_id(self, n: int) -> int:
        """Id of <audio_n> (n < 1024: vq02 code n; n >= 1024: vq06 code n - 1024)."""
        if self.audio_offset < 0:
            raise ValueError("this tokenizer has no <audio_N> tokens")
        return self.audio_offset + n
