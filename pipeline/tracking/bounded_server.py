"""`pipeline serve`: a logged model served with bounds that hold before a request is read.

    pipeline serve --dataset mnist -p 5001          # models:/mnist-classifier@champion
    pipeline serve --model-uri runs:/<run_id>/model -p 5001 --workers 2

It is MLflow's own scoring app (`mlflow.pyfunc.scoring_server`: the same /invocations, /ping,
/version and answers as `mlflow models serve`), with two differences that `mlflow models serve`
cannot give:

* the model is loaded only after its files are checked to be data (model.json + safetensors,
  `pipeline.tracking.serving.load_logged`); `mlflow models serve` loads through
  mlflow.pyfunc.load_model, which imports whatever `loader_module` an edited MLmodel names;
* a body larger than the model's `serve.max_request_bytes` (plus BODY_SLACK for the JSON around
  the files) is refused with a 413 before it is read: from its Content-Length, or, for a chunked
  body, as soon as the bytes received pass the limit. MLflow's app reads the whole body into
  memory first, whatever its size, so a client can make `mlflow models serve` hold any amount.

The model's other limits (images per request, pixels an image declares, time) are enforced by
the model itself (`serving.ImageClassifier.decode`), here as under `mlflow models serve`; the
time limit is also MLflow's request timeout (a 504).
"""
from __future__ import annotations

import json
import os

# The JSON around the files (`{"dataframe_records": [{"image": "..."}, ...]}`: about 16 bytes per
# image) on top of serve.max_request_bytes, which counts the files' base64 text only.
BODY_SLACK = 64 * 1024
MODEL_URI_VARIABLE = "PIPELINE_SERVE_MODEL_URI"  # what each uvicorn worker loads (--workers > 1)


class BodyLimit:
    """ASGI middleware: a POST whose body is over `max_bytes` gets a 413 naming the limit, and is
    never read past it (a declared Content-Length is refused before any byte of the body; a
    chunked body is buffered up to the limit, then handed on whole or refused)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, 400, f"Content-Length {declared.decode(errors='replace')!r} is not a number")
            elif int(declared) > self.max_bytes:
                await _refuse(send, 413, self._too_large(f"declares {int(declared)} bytes"))
            else:  # the server reads no more than it declared
                await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, self._too_large(f"sent more than {self.max_bytes} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, handed = b"".join(chunks), False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, what: str) -> str:
        return (f"the request body {what}, more than the limit of {self.max_bytes} bytes "
                f"(serve.max_request_bytes + {BODY_SLACK} for the JSON around the files); not read: "
                "send fewer or smaller files per request")


async def _refuse(send, status: int, message: str) -> None:
    """MLflow's error answer ({"error_code", "message"}), and the connection closed after it."""
    body = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def build_app(model_uri: str):
    """MLflow's scoring app for the checked model of `model_uri`, behind its body limit."""
    from mlflow.pyfunc import PyFuncModel, scoring_server

    from pipeline.tracking.serving import load_logged_with_metadata

    classifier, metadata = load_logged_with_metadata(model_uri)  # UnsafeModelError before anything runs
    limits = classifier.limits()
    # MLflow's app reads its request timeout (a 504) from this variable when it is built.
    os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(limits["timeout_s"])
    app = scoring_server.init(PyFuncModel(model_meta=metadata, model_impl=classifier))
    return BodyLimit(app, limits["max_request_bytes"] + BODY_SLACK)


def app_from_environment():
    """uvicorn's factory for each worker process when there are several."""
    return build_app(os.environ[MODEL_URI_VARIABLE])


def serve(model_uri: str, host: str, port: int, workers: int) -> None:
    """Checks and loads the model here first, so a refused or missing model stops the command
    before a server starts; then serves it until interrupted."""
    import uvicorn
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.serving import UnsafeModelError
    from pipeline.tracking.store import TrackingError, check_store, check_store_exists, connect

    check_store()
    check_store_exists()
    connect()  # a copied workspace's sqlite store is pointed at its own mlruns/ before the download
    try:
        app = build_app(model_uri)
    except UnsafeModelError as e:
        raise TrackingError(str(e)) from None
    except MlflowException as e:  # no such run, model or alias
        raise TrackingError(f"cannot serve {model_uri}: {e.message}") from None
    print(f"serving {model_uri} on http://{host}:{port}/invocations ({workers} worker(s))", flush=True)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, workers=1, log_level="warning")
        return
    os.environ[MODEL_URI_VARIABLE] = model_uri
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")
