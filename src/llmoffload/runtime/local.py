"""Local llama.cpp servers with tiny random-weight models: the runtime without downloads.

Tests, the runtime benchmark, ``llmoffload endpoints up`` and anyone trying the runtime
offline drive these instead of mocks: every request crosses a real socket into a real
OpenAI-compatible server (``python -m llama_cpp.server``) that tokenises, evaluates and
samples. The model is a GGUF of about 150 kB written here: the ``llama`` architecture with
a SentencePiece-style vocabulary of the 256 byte tokens (llama.cpp's byte fallback turns
any text into them) plus unk/bos/eos. Its output is gibberish, but every code path of a
real server runs.
One thread and a 512-token context (one token per byte here) keep each server light.

A server that must see images also loads a tiny random-weight vision projector (mmproj)
written here, of llama.cpp's ``pixtral`` type: it encodes an image into one token per
16x16 patch plus a break token per row, so prompt tokens grow with the image's size, and
it needs no special tokens from the byte vocabulary. Such a server uses
llama-cpp-python's ``llava-1-5`` chat format (which adds a system prompt) and a context
of 2048 tokens, room for the projector's most (1024 patches) and a prompt.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import numpy as np
import yaml

from llmoffload.errors import OffloadError
from llmoffload.runtime.deployment import Bound
from llmoffload.runtime.media import takes

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


def write_tiny_projector(
    path: str | Path,
    seed: int = 0,
    text_embed: int = 32,
    embed: int = 16,
    patch: int = 16,
    heads: int = 2,
) -> Path:
    """Write a random pixtral vision projector GGUF for a language model of width
    ``text_embed`` (write_tiny_llama's) to ``path`` and return it: one ViT block (RMS
    norms, SiLU-gated feed-forward), a two-layer projection and the row-break embedding."""
    import gguf

    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    path, ff = Path(path), 2 * embed
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("llmoffload-tiny-vision")
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("pixtral")
    writer.add_vision_image_size(1024)  # pixtral bounds an image by its tokens instead
    writer.add_vision_patch_size(patch)
    writer.add_vision_embedding_length(embed)
    writer.add_vision_feed_forward_length(ff)
    writer.add_vision_block_count(1)
    writer.add_vision_head_count(heads)
    writer.add_vision_attention_layernorm_eps(1e-5)
    writer.add_vision_projection_dim(text_embed)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_use_silu(True)
    writer.add_tensor("v.patch_embd.weight", weight(embed, 3, patch, patch))
    writer.add_tensor("v.pre_ln.weight", ones(embed))
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        writer.add_tensor(f"v.blk.0.{name}.weight", weight(embed, embed))
    writer.add_tensor("v.blk.0.ln1.weight", ones(embed))
    writer.add_tensor("v.blk.0.ln2.weight", ones(embed))
    writer.add_tensor("v.blk.0.ffn_gate.weight", weight(ff, embed))
    writer.add_tensor("v.blk.0.ffn_up.weight", weight(ff, embed))
    writer.add_tensor("v.blk.0.ffn_down.weight", weight(embed, ff))
    writer.add_tensor("mm.1.weight", weight(text_embed, embed))
    writer.add_tensor("mm.1.bias", np.zeros(text_embed, dtype=np.float32))
    writer.add_tensor("mm.2.weight", weight(text_embed, text_embed))
    writer.add_tensor("mm.2.bias", np.zeros(text_embed, dtype=np.float32))
    writer.add_tensor("v.token_embd.img_break", weight(text_embed))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


MODEL = "tiny"
HOST = "127.0.0.1"
STARTUP_S = 120.0


class Address(NamedTuple):
    """Where a server listens, the model name it answers to, and whether it sees images."""

    host: str
    port: int
    model: str
    vision: bool = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class LlamaServer:
    """One ``python -m llama_cpp.server`` process; ``stop`` kills it like a crash would."""

    def __init__(
        self,
        model: Path,
        log: Path,
        at: Address,
        verbose: bool = False,
        projector: Path | None = None,
    ) -> None:
        """``verbose`` makes llama.cpp log its own timing of every call to ``log``;
        ``projector`` is the vision projector a server that sees images loads."""
        host, self.port, alias = at.host, at.port, at.model
        self.url = f"http://{host}:{self.port}"
        self.log = log.open("wb")
        vision = ["--clip_model_path", str(projector), "--chat_format", "llava-1-5"]
        vision = vision if projector is not None else []
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
                "2048" if vision else "512",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--verbose",
                str(verbose),
                *vision,
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
    names: list[str], workdir: Path, verbose: bool = False, vision: Collection[str] = ()
) -> Iterator[dict[str, LlamaServer]]:
    """One server per name on a free loopback port, each answering to MODEL; those named
    in ``vision`` see images."""
    at = {name: Address(HOST, free_port(), MODEL, name in vision) for name in names}
    with started(at, workdir, verbose) as up:
        yield up


def addresses(bound: Bound) -> dict[str, Address]:
    """Where a deployment's endpoints listen, named after the first endpoint at each; a
    server sees images if an endpoint at its address serves a modality with an image."""
    modalities = {s.name: s.modalities for s in bound.scenario.servers}
    found: dict[tuple[str, int], tuple[str, Address]] = {}
    for name, ep in bound.deployment.endpoints.items():
        url = urlsplit(ep.base_url)
        if url.scheme != "http":
            raise OffloadError(f"endpoint '{name}': {ep.base_url} is not plain http")
        key = (url.hostname or HOST, url.port or 80)
        vision = takes("image", modalities[name])
        first, address = found.get(key, (name, Address(*key, ep.model)))
        found[key] = (first, address._replace(vision=address.vision or vision))
    return dict(found.values())


@contextmanager
def started(
    at: dict[str, Address], workdir: Path, verbose: bool = False
) -> Iterator[dict[str, LlamaServer]]:
    """Start a server per name (in parallel), wait until all answer, kill them after."""
    model = write_tiny_llama(workdir / "tiny.gguf")
    seeing = any(a.vision for a in at.values())
    projector = write_tiny_projector(workdir / "tiny-mmproj.gguf") if seeing else None
    with ExitStack() as stack:
        servers = {}
        for name, address in at.items():
            log = workdir / f"{name}.log"
            server = LlamaServer(
                model, log, address, verbose, projector if address.vision else None
            )
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
