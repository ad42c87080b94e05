"""stepaudio-rt controller: composition root, asyncio adapters and the pure protocol cores.

Kept import-free on purpose: importing a subpackage (e.g. controller.realtime) must not pull
in asyncio servers or model code.
"""
