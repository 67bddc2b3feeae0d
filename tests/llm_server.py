"""A loopback HTTP server speaking the Anthropic Messages and OpenAI Chat Completions wire
formats, so tests drive the real SDK clients (retries, errors, parsing) with nothing mocked.

Use it from a test::

    from tests.llm_server import FakeLLMServer, llm_server  # noqa: F401 (the fixture)

    def test_x(llm_server: FakeLLMServer) -> None:
        llm_server.reply("hi", usage={"input": 10, "output": 2}).status(429, retry_after=1)
        provider = get_provider("anthropic", ProviderConfig(api_key="k",
                                base_url=llm_server.anthropic_base_url))

or ``with FakeLLMServer() as server: ...``. ``server.tool_call("read_file", path="a.py")``
(or ``reply(..., tool_calls=[...])``) answers with tool calls in each API's own shape:
Anthropic ``tool_use`` content blocks with ``stop_reason: tool_use``, OpenAI
``message.tool_calls`` (arguments as a JSON string) with ``finish_reason: tool_calls``.
Behaviours are consumed in order, one per request. When the queue is empty the server
answers **500** with a message saying so: an unplanned request must be loud, and the
request counter (``server.count``) still shows it.
``server.always(...)`` sets a behaviour served instead once the queue is empty.
``server.prompt_cache()`` turns on a real prompt cache (tests/prompt_cache.py): the usage
of every reply is then computed from what the request sent (Anthropic's ``cache_control``
breakpoints, OpenAI's automatic prefix caching, their minimum lengths, a TTL) instead of
declared; a declared ``output`` is kept, else the reply's own length counts. Each
request's computed usage is kept on ``server.requests[i].usage``.

Paths: Anthropic's SDK posts ``{base_url}/v1/messages``; OpenAI's posts
``{base_url}/chat/completions`` with a base URL that conventionally ends in ``/v1``. Both
spellings, with and without ``/v1``, are accepted. ``usage`` is given in agentsaga's
normalised names (input excludes cache) and rendered in each API's own convention, so a test
can check that the provider normalises it back.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.prompt_cache import PromptCache, tokens

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Behaviour:
    kind: str  # "reply", "status", "malformed"
    text: str = ""
    usage: dict[str, int] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    delay_s: float = 0.0
    stop_reason: str | None = None
    model: str | None = None
    #: Leave ``usage`` out of the reply, as some OpenAI-compatible servers do.
    omit_usage: bool = False
    #: Tool calls: ``{"name": ..., "arguments": {...}}`` (an ``id`` is made up if absent).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON
    api: str  # "anthropic" or "openai"
    #: The usage the prompt cache computed for this request (``prompt_cache()`` only).
    usage: dict[str, int] | None = None


class FakeLLMServer:
    def __init__(self) -> None:
        self._queue: list[Behaviour] = []
        self._default: Behaviour | None = None
        self._script: Callable[[RecordedRequest], Behaviour] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self.requests: list[RecordedRequest] = []
        self.cache: PromptCache | None = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        # Handler threads must not keep the test process alive, nor stop() wait on a slow one.
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        # A short poll keeps stop() (and so each test's teardown) near-instant.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in slow()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- scripting -------------------------------------------------------------------
    def _push(self, behaviour: Behaviour) -> FakeLLMServer:
        with self._lock:
            self._queue.append(behaviour)
        return self

    def reply(
        self,
        text: str = "ok",
        usage: dict[str, int] | None = None,
        *,
        stop_reason: str | None = None,
        model: str | None = None,
        delay_s: float = 0.0,
        omit_usage: bool = False,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> FakeLLMServer:
        """A 200 reply; ``usage`` keys: input, output, cache_read, cache_write."""
        return self._push(
            Behaviour(
                "reply",
                text=text,
                usage=usage,
                stop_reason=stop_reason,
                model=model,
                delay_s=delay_s,
                omit_usage=omit_usage,
                tool_calls=list(tool_calls or []),
            )
        )

    def tool_call(
        self, name: str, usage: dict[str, int] | None = None, text: str = "", **arguments: Any
    ) -> FakeLLMServer:
        """A reply that calls one tool with ``arguments``."""
        return self.reply(text, usage, tool_calls=[{"name": name, "arguments": arguments}])

    def status(
        self,
        status: int,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> FakeLLMServer:
        """An error status with a body in the API's error format (or ``body`` verbatim)."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = f"{retry_after:g}"
        return self._push(
            Behaviour(
                "status",
                status=status,
                headers=extra,
                body=body,
                message=message,
                error_type=error_type,
                code=code,
            )
        )

    def malformed(self) -> FakeLLMServer:
        """200, ``application/json``, and a body that is not JSON."""
        return self._push(Behaviour("malformed"))

    def slow(
        self, seconds: float, text: str = "late", usage: dict[str, int] | None = None
    ) -> FakeLLMServer:
        """A normal reply sent only after ``seconds``."""
        return self.reply(text, usage, delay_s=seconds)

    def script(self, answer: Callable[[RecordedRequest], Behaviour]) -> FakeLLMServer:
        """Answer each request (once the queue is empty) with ``answer(request)``: a model
        whose reply depends on the conversation, e.g. on how many turns it holds."""
        self._script = answer
        return self

    def prompt_cache(
        self,
        ttl_s: float = 300.0,
        clock: Callable[[], float] | None = None,
        *,
        enabled: bool = True,
    ) -> FakeLLMServer:
        """Cache prompts for real from now on (see tests/prompt_cache.py); with
        ``enabled=False``, count what was sent but cache nothing."""
        self.cache = PromptCache(ttl_s, clock or time.monotonic, enabled)
        return self

    def always(self, text: str = "ok", usage: dict[str, int] | None = None) -> FakeLLMServer:
        """Serve this reply whenever the queue is empty (instead of a 500)."""
        self._default = Behaviour("reply", text=text, usage=usage)
        return self

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- serving ---------------------------------------------------------------------
    def _next(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.pop(0)
        if self._script is not None:
            return self._script(request)
        if self._default is not None:
            return self._default
        return Behaviour(
            "status", status=500, message="fake LLM server: no scripted behaviour left"
        )

    def _cached_usage(self, request: RecordedRequest, behaviour: Behaviour) -> Behaviour:
        """The behaviour with the usage the prompt cache computes for ``request``."""
        if self.cache is None or behaviour.kind != "reply" or not isinstance(request.body, dict):
            return behaviour
        if request.api == "anthropic":
            computed = self.cache.anthropic_usage(request.body)
        else:
            computed = self.cache.openai_usage(request.body)
        declared = behaviour.usage or {}
        output = declared.get("output", tokens(behaviour.text) if behaviour.text else 1)
        request.usage = {"cache_write": 0, **computed, "output": output}
        return replace(behaviour, usage=request.usage)

    def render(
        self, api: str, behaviour: Behaviour, request_body: Any
    ) -> tuple[int, dict[str, str], bytes]:
        n = next(self._ids)
        id_header = "request-id" if api == "anthropic" else "x-request-id"
        headers = {"content-type": "application/json", id_header: f"req_fake_{n}"}
        if behaviour.kind == "malformed":
            return 200, headers, b'{"id": "msg_broken", "content": [{"type": "te'
        if behaviour.kind == "status":
            headers.update(behaviour.headers)
            body = behaviour.body
            if body is None:
                body = _error_body(api, behaviour)
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return behaviour.status, headers, raw
        model = behaviour.model or (
            request_body.get("model", "fake") if isinstance(request_body, dict) else "fake"
        )
        body = _reply_body(api, n, model, behaviour)
        if behaviour.omit_usage:
            body.pop("usage", None)
        return 200, headers, json.dumps(body).encode()


def _error_body(api: str, b: Behaviour) -> dict[str, Any]:
    message = b.message or f"fake error {b.status}"
    if api == "anthropic":
        kind = b.error_type or _ANTHROPIC_ERROR_TYPES.get(b.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": b.error_type or "error", "code": b.code}}


def _reply_body(api: str, n: int, model: str, b: Behaviour) -> dict[str, Any]:
    u = {"input": 10, "output": 5, "cache_read": 0, "cache_write": 0, **(b.usage or {})}
    calls = [
        {"id": c.get("id") or f"call_{n}_{i}", "name": c["name"], "arguments": c["arguments"]}
        for i, c in enumerate(b.tool_calls, start=1)
    ]
    if api == "anthropic":
        content: list[dict[str, Any]] = [{"type": "text", "text": b.text}] if b.text else []
        content += [
            {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
            for c in calls
        ]
        if not content:
            content = [{"type": "text", "text": ""}]
        return {
            "id": f"msg_fake_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": b.stop_reason or ("tool_use" if calls else "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": u["input"],
                "output_tokens": u["output"],
                "cache_read_input_tokens": u["cache_read"],
                "cache_creation_input_tokens": u["cache_write"],
            },
        }
    prompt = u["input"] + u["cache_read"] + u["cache_write"]
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _openai_message(b.text, calls),
                "finish_reason": b.stop_reason or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": u["output"],
            "total_tokens": prompt + u["output"],
            "prompt_tokens_details": {
                "cached_tokens": u["cache_read"],
                "cache_write_tokens": u["cache_write"],
            },
        },
    }


def _openai_message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    if not calls:
        return {"role": "assistant", "content": text}
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for c in calls
        ],
    }


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep pytest output clean

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace")
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            path = self.path.split("?")[0].rstrip("/")
            if path in ("/v1/messages", "/messages"):
                api = "anthropic"
            elif path in ("/v1/chat/completions", "/chat/completions"):
                api = "openai"
            else:
                self._send(404, {"content-type": "text/plain"}, b"unknown path")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = RecordedRequest("POST", self.path, headers, body, api)
            behaviour = server._cached_usage(request, server._next(request))
            if behaviour.delay_s and server._stopping.wait(behaviour.delay_s):
                return  # the server is stopping; drop the slow reply
            status, out_headers, payload = server.render(api, behaviour, body)
            try:
                self._send(status, out_headers, payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test): expected

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    """A started FakeLLMServer, stopped at the end of the test."""
    with FakeLLMServer() as server:
        yield server
