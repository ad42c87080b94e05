"""stepaudio-rt controller: composition root, asyncio adapters and the pure protocol cores.

Kept import-free on purpose: importing a subpackage (e.g. controller.realtime) must not pull
in asyncio servers or model code.
"""
import os

# onnxruntime 1.32 on Linux records telemetry from its import on (the Python path, OS, CPU model, a device id) into
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ for upload to Microsoft. A self-hosted voice server should not do
# that unasked, and only this variable, set before the import, stops it (disable_telemetry_events() comes too late):
# every command starts here, before any model code. ORT_DISABLE_TELEMETRY=0 in the environment turns it back on.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
