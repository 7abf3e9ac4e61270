"""A request's image and audio (issue 24): checked by their bytes, sized into the plan,
sent as OpenAI content parts to the subtasks of their modality, and refused, with nothing
sent, when bad.

The endpoints here are a real HTTP server that answers every completion and keeps every
body it received (what the runtime sends is read off the wire), and, at the end, local
llama.cpp servers whose image endpoints load a tiny vision projector: the image is
encoded there, as the prompt tokens they report show. Images and audio are written by
the tests (PNG by hand, WAV with the stdlib's ``wave``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import struct
import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image as PilImage
from test_runtime import SERVERS, assert_one_line_error, cli, edgy_scenario, run_batches
from typer.testing import CliRunner

from llmoffload.cli.app import app as main_app
from llmoffload.errors import OffloadError
from llmoffload.runtime.calibrate import (
    IMAGE_SIDES,
    OUTPUT_TOKENS,
    PROMPT_WORDS,
    Sample,
    fit,
    measure,
)
from llmoffload.runtime.deployment import Bound, Endpoint, load_deployment
from llmoffload.runtime.executor import (
    BYTES_PER_TOKEN,
    EndpointError,
    Request,
    build_instance,
    complete,
    planner,
)
from llmoffload.runtime.local import LlamaServer, llama_servers, write_deployment
from llmoffload.runtime.media import (
    MAX_MEDIA_BYTES,
    checked,
    decode_media,
    read_media,
    sniff,
)
from llmoffload.runtime.media import pattern_png as png
from llmoffload.runtime.service import create_app


def wav(path: Path, frames: int) -> Path:
    """A 16-bit mono 8 kHz WAV of a sawtooth."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", (k * 397) % 30000) for k in range(frames)))
    return path


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32)
GIF = b"GIF89a" + bytes(32)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(32)
MP3_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(32)
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(32)  # MPEG-1 layer III, no tag


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "valve.png"
    path.write_bytes(png(16, 12))
    return path


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    return wav(tmp_path / "pump.wav", 800)


class Recorder:
    """A real OpenAI-compatible endpoint: answers every completion 'ok', keeps each body."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                usage = {"prompt_tokens": 1, "completion_tokens": 1}
                reply = json.dumps({"choices": [{"message": {"content": "ok"}}], "usage": usage})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args: object) -> None:
                pass  # no access log in the test output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sent(self) -> dict[str, Any]:
        """Each call's user content, keyed by the node a middle subtask's prompt names (the
        default template's 'Do the ... step 'node''), else by the prompt's first line (the
        analysis and aggregation stages)."""
        out = {}
        for body in self.bodies:
            content = body["messages"][0]["content"]
            text = content if isinstance(content, str) else content[-1]["text"]
            name = text.split("'")[1] if text.startswith("Do the ") else text.split("\n")[0]
            out[name] = content
        return out


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def deployment(tmp_path: Path, url: str, **endpoint: object) -> Path:
    """Every server of the paper scenario at ``url`` (changes to edge-image merged in)."""
    endpoints = {name: {"base_url": url, "model": "m"} for name in SERVERS}
    endpoints["edge-image"] |= endpoint
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump({"max_tokens": 8, "endpoints": endpoints}))
    return path


# --- the payloads themselves ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "mime"),
    [
        (png(2, 2), "image", "image/png"),
        (JPEG, "image", "image/jpeg"),
        (GIF, "image", "image/gif"),
        (WEBP, "image", "image/webp"),
        (MP3_ID3, "audio", "audio/mpeg"),
        (MP3_FRAME, "audio", "audio/mpeg"),
    ],
)
def test_types_are_known_by_their_bytes(data: bytes, kind: str, mime: str) -> None:
    assert sniff(data) == (kind, mime)


def test_unknown_bytes_are_no_type() -> None:
    for data in (b"", b"hello", b"RIFF\x00\x00\x00\x00AVI ", b"\xff\xd8", b"\xff\xe0"):
        assert sniff(data) is None


@pytest.mark.parametrize("form", ["PNG", "JPEG", "WEBP", "GIF"])
def test_an_image_is_decoded_whole_and_counted_in_pixels(form: str) -> None:
    written = io.BytesIO()
    PilImage.new("RGB", (30, 20), (200, 40, 90)).save(written, form)
    media = checked("image", written.getvalue())
    assert media.pixels == 600 and media.mime == f"image/{form.lower()}"
    with pytest.raises(OffloadError, match="not a readable image"):
        checked("image", written.getvalue()[: len(written.getvalue()) // 2])


def test_content_parts_carry_the_exact_bytes(image: Path, audio: Path) -> None:
    pic = read_media("image", image)
    part = pic.part()
    assert list(part) == ["type", "image_url"] and part["type"] == "image_url"
    assert list(part["image_url"]) == ["url"]
    prefix, encoded = part["image_url"]["url"].split(",")
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(encoded, validate=True) == image.read_bytes()

    sound = read_media("audio", audio)
    part = sound.part()
    assert list(part) == ["type", "input_audio"] and part["type"] == "input_audio"
    assert part["input_audio"]["format"] == "wav" and list(part["input_audio"]) == [
        "data",
        "format",
    ]
    assert base64.b64decode(part["input_audio"]["data"], validate=True) == audio.read_bytes()
    assert checked("audio", MP3_FRAME).part()["input_audio"]["format"] == "mp3"


def test_a_base64_payload_is_the_file_it_encodes(image: Path) -> None:
    data = image.read_bytes()
    assert decode_media("image", base64.b64encode(data).decode()) == read_media("image", image)


# --- sizes in the plan ------------------------------------------------------------------


TAKERS = {"vqa": ["perceive", "answer"], "audio-analysis": ["transcribe", "anomaly"]}


def test_the_plan_counts_the_payload_bytes_in_its_subtasks_inputs(
    tmp_path: Path, image: Path, audio: Path
) -> None:
    bound = load_deployment(deployment(tmp_path, "http://127.0.0.1:9"))
    cycles_per_bit = bound.scenario.workload.cycles_per_bit
    for workflow, kind, path in (("vqa", "image", image), ("audio-analysis", "audio", audio)):
        plain = Request(workflow=workflow, text="Is it broken?")
        sent = plain.model_copy(update={kind: read_media(kind, path)})
        (without,) = build_instance(bound, [plain]).tasks
        (with_it,) = build_instance(bound, [sent]).tasks
        takers = []
        for a, b in zip(with_it.subtasks, without.subtasks, strict=True):
            grown = 8 * path.stat().st_size if kind in a.modality.split("+") else 0
            assert a.input_bits - b.input_bits == grown, a.name
            assert a.cycles == cycles_per_bit * a.input_bits
            assert a.output_bits == b.output_bits
            takers += [a.name] if grown else []
        assert takers == TAKERS[workflow]


def test_under_compute_tokens_an_image_adds_its_tokens_at_the_servers_rate(
    tmp_path: Path,
) -> None:
    """Uncalibrated, an image adds no tokens; calibrated, a 100x100 image adds 0.01 Mpx at
    the mean rate of the servers serving the subtask's modality (``image``: edge-image and
    the cloud; ``image+text``: the cloud alone), and text subtasks none."""
    path = deployment(tmp_path, "http://127.0.0.1:9")
    data = yaml.safe_load(path.read_text()) | {"scenario": "tokens"}
    path.write_text(yaml.safe_dump(data))
    bound = load_deployment(path)
    plain = Request(workflow="vqa", text="Is it broken?")
    sent = plain.model_copy(update={"image": checked("image", png(100, 100))})
    (without,) = build_instance(bound, [plain]).tasks
    (with_it,) = build_instance(bound, [sent]).tasks
    for a, b in zip(with_it.subtasks, without.subtasks, strict=True):
        assert a.prompt_tokens == b.prompt_tokens == math.ceil(b.input_bits / 8 / BYTES_PER_TOKEN)
    rates = {"edge-image": 4000.0, "cloud": 6000.0}  # the paper's image servers
    servers = [
        s.model_copy(update={"image_tokens_per_mpx": rates.get(s.name)})
        for s in bound.scenario.servers
    ]
    rated = Bound(bound.deployment, bound.scenario.model_copy(update={"servers": servers}))
    assert [s.name for s in rated.scenario.servers if "image" in s.modalities] == list(rates)
    (with_it,) = build_instance(rated, [sent]).tasks
    for a, b in zip(with_it.subtasks, without.subtasks, strict=True):
        text = b.input_bits / 8 / BYTES_PER_TOKEN
        grown = 0.01 * {"image": (4000 + 6000) / 2, "image+text": 6000}.get(a.modality, 0)
        assert a.prompt_tokens == math.ceil(text + grown), a.name


# --- run: what reaches the endpoints ----------------------------------------------------


def test_run_sends_the_image_to_the_image_subtasks_only(
    tmp_path: Path, image: Path, recorder: Recorder
) -> None:
    path = deployment(tmp_path, recorder.url)
    args = ["--workflow", "vqa", "--text", "Is the valve open?", "--image", image, "--json"]
    result = cli("run", "--deployment", path, *args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["error"] is None
    sent = recorder.sent()
    assert len(recorder.bodies) == 5 and len(sent) == 5
    url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    for name in ("perceive", "answer"):
        picture, text = sent[name]
        assert picture == {"type": "image_url", "image_url": {"url": url}}
        assert text["type"] == "text" and "Is the valve open?" in text["text"]
    assert [n for n, content in sent.items() if isinstance(content, str)] == [
        "Plan the steps for this request.",
        "question",
        "Combine the results into one answer.",
    ]


def test_serve_sends_the_audio_to_the_audio_subtasks_only(
    tmp_path: Path, audio: Path, recorder: Recorder
) -> None:
    bound = load_deployment(deployment(tmp_path, recorder.url))
    encoded = base64.b64encode(audio.read_bytes()).decode()
    body = {"workflow": "audio-text", "text": "Does it hum?", "audio": encoded}
    with TestClient(create_app(bound, planner("heft", bound))) as client:
        reply = client.post("/v1/requests", json=body)
    assert reply.status_code == 200, reply.text
    sent = recorder.sent()
    assert len(sent) == 5
    for name in ("listen", "fuse"):
        sound, _ = sent[name]
        assert sound == {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}}
    assert isinstance(sent["read-log"], str)


def test_serve_takes_the_same_request_as_form_files(
    tmp_path: Path, image: Path, audio: Path, recorder: Recorder
) -> None:
    """/v1/requests/upload (multipart) sends the endpoints exactly what /v1/requests
    (base64 in JSON) does, and plans with the same input sizes."""
    bound = load_deployment(deployment(tmp_path, recorder.url))
    sent, traces = [], []
    for flow, kind, path in (("vqa", "image", image), ("audio-text", "audio", audio)):
        fields = {"workflow": flow, "text": "What is wrong?"}
        as_json = {"json": fields | {kind: encode(path)}}
        as_form = {"data": fields, "files": {kind: path.read_bytes()}}
        with TestClient(create_app(bound, planner("heft", bound))) as client:
            for route, body in (("/v1/requests", as_json), ("/v1/requests/upload", as_form)):
                recorder.bodies.clear()
                reply = client.post(route, **body)
                assert reply.status_code == 200, reply.text
                sent.append(recorder.sent())
                trace = reply.json()["trace"]  # predicted times follow the planned sizes
                times = ("subtask", "predicted_start", "predicted_end")
                traces.append([tuple(step[k] for k in times) for step in trace])
    assert sent[0] == sent[1] and sent[2] == sent[3]
    assert traces[0] == traces[1] and traces[2] == traces[3]
    parts = [c[0]["type"] for c in sent[1].values() if isinstance(c, list)]
    assert parts and set(parts) == {"image_url"}


def encode(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# --- bad media: one line, exit 2 / a 4xx, and nothing sent -------------------------------


def bad_files(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(option, file, what the error says) for every way a file can be bad."""
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is no picture at all")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    picture = tmp_path / "picture.wav"  # a PNG named like audio: the bytes decide
    picture.write_bytes(png(4, 4))
    sound = wav(tmp_path / "sound.png", 10)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png(64, 64)[:-200])  # a PNG's magic bytes, half its pixels
    huge = tmp_path / "huge.png"
    with huge.open("wb") as out:  # sparse: one byte over the limit, nothing written
        out.truncate(MAX_MEDIA_BYTES + 1)
    over = f"{MAX_MEDIA_BYTES + 1} bytes, over the {MAX_MEDIA_BYTES}-byte limit"
    return [
        ("--image", tmp_path / "missing.png", "cannot read the image: No such file or directory"),
        ("--audio", tmp_path, "cannot read the audio: Is a directory"),
        ("--image", garbage, "not a PNG, JPEG, WebP or GIF image (unrecognised bytes)"),
        ("--audio", empty, "not WAV or MP3 audio (unrecognised bytes)"),
        ("--audio", picture, "not WAV or MP3 audio (its bytes are image/png)"),
        ("--image", sound, "not a PNG, JPEG, WebP or GIF image (its bytes are audio/wav)"),
        ("--image", huge, over),
        ("--image", cut, "not a readable image (image file is truncated"),
    ]


def test_run_refuses_bad_media_in_one_line_and_sends_nothing(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = deployment(tmp_path, recorder.url)
    for option, file, fragment in bad_files(tmp_path):
        result = cli(
            "run", "--deployment", path, "--workflow", "vqa", "--text", "Why?", option, file
        )
        assert_one_line_error(result, f"error: {option} {file}: {fragment}")
    sound = wav(tmp_path / "a.wav", 10)
    unused = cli(
        "run", "--deployment", path, "--workflow", "vqa", "--text", "Why?", "--audio", sound
    )
    assert_one_line_error(unused, "workflow 'vqa' has no audio subtask to send the audio to")
    assert recorder.bodies == []


def test_serve_refuses_bad_media_with_the_reason_and_sends_nothing(
    tmp_path: Path, recorder: Recorder
) -> None:
    bound = load_deployment(deployment(tmp_path, recorder.url))
    b64 = base64.b64encode
    cases = [
        ("image", "not base64 at all!", "not valid base64"),
        ("image", b64(b"no picture").decode(), "(unrecognised bytes)"),
        ("audio", b64(png(4, 4)).decode(), "not WAV or MP3 audio (its bytes are image/png)"),
        ("image", b64(bytes(MAX_MEDIA_BYTES + 1)).decode(), "over the 20971520-byte limit"),
        ("image", 12, "must be a PNG, JPEG, WebP or GIF image as a base64 string"),
        (
            "image",
            b64(png(64, 64)[:-200]).decode(),
            "not a readable image (image file is truncated",
        ),
    ]
    with TestClient(create_app(bound, planner("heft", bound))) as client:
        for field, value, fragment in cases:
            reply = client.post("/v1/requests", json={"workflow": "vqa", "text": "x", field: value})
            assert reply.status_code == 422, reply.text
            (error,) = reply.json()["detail"]
            assert error["loc"] == ["body", field] and fragment in error["msg"], error
        audio = b64((wav(tmp_path / "a.wav", 10)).read_bytes()).decode()
        unused = client.post("/v1/requests", json={"workflow": "vqa", "text": "x", "audio": audio})
        assert unused.status_code == 400
        assert "workflow 'vqa' has no audio subtask" in unused.json()["detail"]
    assert recorder.bodies == []


def test_serve_refuses_bad_form_files_with_the_reason_and_sends_nothing(
    tmp_path: Path, recorder: Recorder
) -> None:
    bound = load_deployment(deployment(tmp_path, recorder.url))
    fields = {"workflow": "vqa", "text": "Why?"}
    with TestClient(create_app(bound, planner("heft", bound))) as client:
        for option, file, fragment in bad_files(tmp_path)[2:]:  # the files that exist
            kind = option.removeprefix("--")
            if file.stat().st_size > MAX_MEDIA_BYTES:
                continue  # the body limit's, below
            reply = client.post("/v1/requests/upload", data=fields, files={kind: file.read_bytes()})
            assert reply.status_code == 422, reply.text
            (error,) = reply.json()["detail"]
            assert error["loc"] == ["body", kind] and fragment in error["msg"], error
        blank = client.post("/v1/requests/upload", data={"workflow": "vqa", "text": " "})
        assert blank.status_code == 422
        (error,) = blank.json()["detail"]
        assert error["loc"] == ["body", "text"] and "whitespace only" in error["msg"]
        missing = client.post("/v1/requests/upload", data={"text": "Why?"})
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["body", "workflow"]
    small = create_app(bound, planner("heft", bound), max_body=1000)
    with TestClient(small) as client:
        reply = client.post("/v1/requests/upload", data=fields, files={"image": png(256, 256)})
        assert reply.status_code == 413
    assert recorder.bodies == []


# --- deployments: which endpoints can take media ----------------------------------------


def test_an_endpoint_serving_images_must_speak_chat(tmp_path: Path) -> None:
    bad = deployment(tmp_path, "http://127.0.0.1:9", api="completions")
    result = CliRunner().invoke(main_app, ["deployment", "validate", str(bad)])
    assert_one_line_error(
        result, "endpoint 'edge-image' serves modality 'image', which needs api: chat"
    )
    with pytest.raises(OffloadError, match="needs api: chat"):
        load_deployment(bad)
    data = yaml.safe_load(bad.read_text())
    data["endpoints"]["edge-image"]["api"] = "chat"
    data["endpoints"]["edge-text"]["api"] = "completions"  # text only: fine
    bad.write_text(yaml.safe_dump(data))
    assert CliRunner().invoke(main_app, ["deployment", "validate", str(bad)]).exit_code == 0


# --- real llama.cpp servers: the image is encoded, the audio refused ----------------------


@pytest.fixture(scope="module")
def seeing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LlamaServer]]:
    """The four servers; edge-image and the cloud (the image modalities) see images."""
    work = tmp_path_factory.mktemp("vision")
    with llama_servers(SERVERS, work, vision=("edge-image", "cloud")) as running:
        yield running


def image_tokens(side: int) -> int:
    """The tiny pixtral projector's tokens for a square image: one per 16x16 patch and a
    break between rows."""
    rows = side // 16
    return rows * rows + rows - 1


def test_a_vqa_png_reaches_the_image_edge_as_an_image(
    seeing: dict[str, LlamaServer], tmp_path: Path
) -> None:
    path = write_deployment(
        tmp_path / "deployment.yaml", seeing, scenario=str(edgy_scenario(tmp_path / "s.yaml"))
    )
    plain = Request(workflow="vqa", text="Is the valve open?")
    requests = [plain] + [
        plain.model_copy(update={"image": checked("image", png(side, side))}) for side in (64, 128)
    ]
    names = [s.name for s in load_deployment(path).scenario.servers]
    tokens: dict[str, list[int]] = {}
    for request in requests:  # one at a time: each planned on idle servers, alike
        (batch,) = run_batches(path, [[request]])
        (result,) = batch.results
        assert result.error is None, result.error
        steps = {s.name: s for s in result.steps}
        assert names[steps["perceive"].done.server] == "edge-image"
        assert names[steps["answer"].done.server] == "cloud"
        for name in ("perceive", "answer", "question"):
            tokens.setdefault(name, []).append(steps[name].prompt_tokens)
    for name in ("perceive", "answer"):  # the image subtasks: the server's count grows
        none, small, large = tokens[name]
        assert none < small < large, tokens
    # perceive's prompt differs only by its image (answer's context holds outputs that
    # the image changed); the question, a text subtask, is sent none
    small, large = tokens["perceive"][1:]
    assert large - small == image_tokens(128) - image_tokens(64), tokens
    assert len(set(tokens["question"])) == 1, tokens


def server_endpoint(bound: Bound, name: str) -> Endpoint:
    return bound.endpoints[[s.name for s in bound.scenario.servers].index(name)]


def prompt_tokens(bound: Bound, server: str, images: list[bytes]) -> list[int]:
    """The prompt tokens one server reports for the same prompt with each image."""

    async def go() -> list[int]:
        async with httpx.AsyncClient() as client:
            endpoint = server_endpoint(bound, server)
            return [
                (
                    await complete(
                        client, endpoint, bound.deployment, "Look.", media=[checked("image", i)]
                    )
                ).prompt_tokens
                for i in images
            ]

    return asyncio.run(go())


def test_a_text_only_server_drops_the_image_unseen(
    seeing: dict[str, LlamaServer], tmp_path: Path
) -> None:
    """Why the image endpoints need the projector: without one, llama-cpp-python's server
    takes the image part and ignores it, so its prompt tokens do not move."""
    bound = load_deployment(write_deployment(tmp_path / "deployment.yaml", seeing))
    images = [png(64, 64), png(128, 128)]
    small, large = prompt_tokens(bound, "edge-text", images)
    assert small == large
    small, large = prompt_tokens(bound, "edge-image", images)
    assert large - small == image_tokens(128) - image_tokens(64)


def test_the_pinned_server_refuses_input_audio(
    seeing: dict[str, LlamaServer], tmp_path: Path, audio: Path
) -> None:
    """llama-cpp-python's server knows no ``input_audio`` part: it answers 500 with the
    validation errors of its message types, and the request fails on every server."""
    path = write_deployment(tmp_path / "deployment.yaml", seeing)
    bound = load_deployment(path)
    refusals: list[str] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        refusals.append(response.text)

    async def go() -> None:
        async with httpx.AsyncClient(event_hooks={"response": [keep]}) as client:
            endpoint = server_endpoint(bound, "edge-audio")
            await complete(client, endpoint, bound.deployment, "Hum?", media=[sound])

    sound = read_media("audio", audio)
    with pytest.raises(EndpointError, match="HTTP 500"):
        asyncio.run(go())
    (refusal,) = refusals
    assert "validation errors" in refusal and "'type': 'input_audio'" in refusal
    args = ["--workflow", "audio-text", "--text", "Hum?", "--audio", audio]
    assert_one_line_error(
        cli("run", "--deployment", path, *args), "failed on every server: HTTP 500"
    )


def test_calibration_probes_images_where_a_server_takes_them(
    seeing: dict[str, LlamaServer], tmp_path: Path
) -> None:
    """A server that takes images gets image probes too, sized by their bytes, and their
    prompt tokens (the server's own count) grow by the image's tokens, so the token fit
    sees prefill grow with the image."""
    bound = load_deployment(write_deployment(tmp_path / "deployment.yaml", seeing))

    async def go() -> list[Sample]:
        async with httpx.AsyncClient() as client:
            return await measure(client, bound, 1)

    samples = asyncio.run(go())
    texts, outs = len(PROMPT_WORDS), len(OUTPUT_TOKENS)
    for k, server in enumerate(bound.scenario.servers):
        images = any(m.startswith("image") for m in server.modalities)
        calls = texts * outs + (len(IMAGE_SIDES) * outs if images else 0)
        assert sum(s.server == k for s in samples) == calls, server.name
    edge = [s.name for s in bound.scenario.servers].index("edge-image")
    probed = [s for s in samples if s.server == edge][texts * outs :]  # small, then large
    sizes = [len(png(side, side)) for side in IMAGE_SIDES for _ in range(outs)]

    def beyond_text(sample: Sample, image_bytes: int) -> float:  # one token per text byte
        return sample.prompt_tokens - (sample.bits / 8 - image_bytes)

    extra = [beyond_text(s, n) for s, n in zip(probed, sizes, strict=True)]
    small, large = IMAGE_SIDES
    assert extra[outs:] == [e + image_tokens(large) - image_tokens(small) for e in extra[:outs]]


def test_calibrated_plans_count_an_images_tokens_as_the_server_does(
    seeing: dict[str, LlamaServer], tmp_path: Path
) -> None:
    """After calibration (which fits each image server's tokens per megapixel on its
    64 and 128 px probes), the plan's tokens for a 96 px image are within 10% of what
    the tiny pixtral projector makes of it, 41 tokens."""
    bound = load_deployment(write_deployment(tmp_path / "deployment.yaml", seeing))

    async def go() -> list[Sample]:
        async with httpx.AsyncClient() as client:
            return await measure(client, bound, 1)

    fitted = Bound(bound.deployment, fit(bound, asyncio.run(go())))
    for server in fitted.scenario.servers:
        rate = server.image_tokens_per_mpx
        assert (rate is None) == (server.name not in ("edge-image", "cloud")), server.name
    plain = Request(workflow="vqa", text="Is the valve open?")
    sent = plain.model_copy(update={"image": checked("image", png(96, 96))})
    (without,) = build_instance(fitted, [plain]).tasks
    (with_it,) = build_instance(fitted, [sent]).tasks
    perceive = [
        a.prompt_tokens - b.prompt_tokens
        for a, b in zip(with_it.subtasks, without.subtasks, strict=True)
        if a.name == "perceive"
    ]
    assert 96 not in IMAGE_SIDES and image_tokens(96) == 41
    assert abs(perceive[0] - image_tokens(96)) <= 0.1 * image_tokens(96), perceive
