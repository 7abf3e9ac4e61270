"""Local llama.cpp servers with tiny random-weight models: the runtime without downloads.

Tests, the runtime benchmark, ``llmoffload endpoints up`` and anyone trying the runtime
offline drive these instead of mocks: every request crosses a real socket into a real
OpenAI-compatible server (``python -m llama_cpp.server``) that tokenises, evaluates and
samples. The model is a GGUF of about 150 kB written here: the ``llama`` architecture with
a SentencePiece-style vocabulary of the 256 byte tokens (llama.cpp's byte fallback turns
any text into them) plus unk/bos/eos. Its output is gibberish, but every code path of a
real server runs.
One thread and a 512-token context (one token per byte here) keep each server light.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import yaml

from llmoffload.errors import OffloadError
from llmoffload.runtime.deployment import Deployment

SPECIALS = ("<unk>", "<s>", "</s>")
TYPE_UNKNOWN, TYPE_CONTROL, TYPE_BYTE = 2, 3, 6  # llama.cpp token types


def write_tiny_llama(
    path: str | Path,
    seed: int = 0,
    embed: int = 32,
    layers: int = 2,
    heads: int = 2,
    context: int = 512,
) -> Path:
    """Write a random llama GGUF to ``path`` and return it (float32, no quantisation)."""
    import gguf  # only needed to make a local model

    rng = np.random.default_rng(seed)
    tokens = [*SPECIALS, *(f"<0x{b:02X}>" for b in range(256))]
    types = [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL] + [TYPE_BYTE] * 256
    vocab, ff = len(tokens), 2 * embed

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("llmoffload-tiny")
    writer.add_context_length(context)
    writer.add_embedding_length(embed)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(embed // heads)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_tensor("token_embd.weight", weight(vocab, embed))
    writer.add_tensor("output_norm.weight", np.ones(embed, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab, embed))
    for n in range(layers):
        blk = f"blk.{n}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(embed, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{blk}.{name}.weight", weight(embed, embed))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(embed, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(ff, embed))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(ff, embed))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(embed, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


MODEL = "tiny"
HOST = "127.0.0.1"
STARTUP_S = 120.0
Address = tuple[str, int, str]  # host, port, and the model name the server answers to


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class LlamaServer:
    """One ``python -m llama_cpp.server`` process; ``stop`` kills it like a crash would."""

    def __init__(self, model: Path, log: Path, at: Address, verbose: bool = False) -> None:
        """``verbose`` makes llama.cpp log its own timing of every call to ``log``."""
        host, self.port, alias = at
        self.url = f"http://{host}:{self.port}"
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                alias,
                "--host",
                host,
                "--port",
                str(self.port),
                "--n_ctx",
                "512",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--verbose",
                str(verbose),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
                raise OffloadError(
                    f"llama server for {self.url} exited with {self.proc.returncode}: "
                    f"{lines[-1] if lines else 'no output'}"
                )
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise OffloadError(f"llama server for {self.url} not ready in {STARTUP_S:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextmanager
def llama_servers(
    names: list[str], workdir: Path, verbose: bool = False
) -> Iterator[dict[str, LlamaServer]]:
    """One server per name on a free loopback port, each answering to MODEL."""
    with started({name: (HOST, free_port(), MODEL) for name in names}, workdir, verbose) as up:
        yield up


def addresses(deployment: Deployment) -> dict[str, Address]:
    """Where a deployment's endpoints listen, named after the first endpoint at each."""
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for name, ep in deployment.endpoints.items():
        url = urlsplit(ep.base_url)
        if url.scheme != "http":
            raise OffloadError(f"endpoint '{name}': {ep.base_url} is not plain http")
        found.setdefault((url.hostname or HOST, url.port or 80), (name, ep.model))
    return {name: (host, port, model) for (host, port), (name, model) in found.items()}


@contextmanager
def started(
    at: dict[str, Address], workdir: Path, verbose: bool = False
) -> Iterator[dict[str, LlamaServer]]:
    """Start a server per name (in parallel), wait until all answer, kill them after."""
    model = write_tiny_llama(workdir / "tiny.gguf")
    with ExitStack() as stack:
        servers = {}
        for name, address in at.items():
            server = LlamaServer(model, workdir / f"{name}.log", address, verbose)
            stack.callback(server.stop)
            servers[name] = server
        deadline = time.monotonic() + STARTUP_S
        for server in servers.values():
            server.wait_ready(deadline)
        yield servers


def write_deployment(
    path: Path,
    servers: dict[str, LlamaServer],
    scenario: str = "paper",
    **settings: object,
) -> Path:
    """A deployment file binding each scenario server to the running server of that name."""
    data = {
        "scenario": scenario,
        "max_tokens": 8,
        "endpoints": {
            name: {"base_url": s.url, "model": MODEL, "timeout_s": 20}
            for name, s in servers.items()
        },
        **settings,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Run an ASGI app on a real uvicorn server in a thread; yield its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
