"""`python -m labkit.selfcheck`: `make setup`'s check of the embedded model, run once after
install. One short generation by llama.cpp in a child process (a crash names the signal, the
likely cause and the fix), then the same generation through labkit's whole call path (client,
worker process, its server, the transport). It drives the client, so it sits on top with the
CLI rather than inside the backend it checks.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .backends.local import gguf_path
from .backends.local_worker import (
    SYSTEM_INFO,
    _cause,
    check_model_file,
    has_amx,
    signal_name,
    stop_all,
)
from .client import Client
from .errors import LabkitError
from .models import Registry

__all__ = ["self_check"]


def self_check() -> int:
    """One short generation in a child process; on a crash, say why and how to fix it."""
    path = check_model_file(gguf_path())
    code = (
        "import llama_cpp, sys\n"
        "info = llama_cpp.llama_print_system_info().decode()\n"
        f"print({SYSTEM_INFO!r}, info, flush=True)\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)\n"
        "out = llm.create_chat_completion(messages=[{'role': 'user', 'content': 'Say hi.'}],"
        " max_tokens=8, seed=1)\n"
        "print('generated:', repr(out['choices'][0]['message']['content']), flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600
    )
    log = (proc.stdout + proc.stderr).strip().splitlines()
    amx = has_amx(next((line for line in log if line.startswith(SYSTEM_INFO)), ""))
    if proc.returncode != 0:
        sig = signal_name(proc.returncode)
        how = f"was killed by {sig}" if sig else f"exited with status {proc.returncode}"
        cause = _cause(sig, amx)
        print(
            f"labkit set-up check FAILED: a short generation with the local model ({path}) "
            f"{how}. {cause}\nlast lines:\n  " + "\n  ".join(log[-15:]),
            file=sys.stderr,
        )
        return 1
    print(f"local model: {path}")
    print(next((line for line in log if line.startswith("generated:")), "generated: ?"))
    # The same generation through labkit: the worker process, its server and the transport.
    with tempfile.TemporaryDirectory() as tmp:
        client = Client(registry=Registry(), cache_dir=None, traces=Path(tmp) / "t.db")
        try:
            done = client.generate("Say hi.", model="local/smollm2-135m", max_tokens=8)
        except LabkitError as exc:
            print(f"labkit set-up check FAILED: the local model worker: {exc}", file=sys.stderr)
            return 1
        finally:
            client.close()
            stop_all()
    print(f"through the worker: {done.text!r} ({done.usage.completion_tokens} tokens)")
    if amx:
        print(
            "warning: this llama.cpp build has an AMX code path, which crashes on some Xeons; "
            "`make clean-wheels setup` installs the portable build.",
            file=sys.stderr,
        )
    print("labkit set-up check passed")
    return 0


if __name__ == "__main__":
    sys.exit(self_check())
