"""The physical-limit baseline of the API benchmarks (bench_api.py): a bare Starlette app
answering fixed bytes (no auth, no database), run by uvicorn with one worker, uvloop, httptools
and no access log. The bytes are those the service answered to the same request
(BARE_BODY_FILE). GET and HEAD as in the original tool (../shared/tools/bare_app.py); POST too
(its body read), for the invoke baseline."""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

with open(os.environ["BARE_BODY_FILE"], "rb") as _fh:
    BODY = _fh.read()


async def endpoint(request: Request) -> Response:
    if request.method == "POST":
        await request.body()
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "HEAD", "POST"])])
