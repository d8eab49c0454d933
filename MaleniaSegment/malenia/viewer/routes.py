"""The viewer's routes, mounted by `create_app` beside the engine API.

    GET  /                       the page (Resources/Web/index.html); `/?token=T` once sets a
                                 cookie and redirects to `/`; without the cookie: 401
    GET  /web/{file}             the page's script and the vendored NiiVue (cookie too)
    POST /v1/volumes/sample      encode the bundled sample CT                      -> 202
    POST /v1/volumes/archive     a zipped DICOM series (or one NIfTI/NRRD/MHA in a zip) -> 202
    POST /v1/volumes/{id}/crop   {"roi": [[centre RAS mm x3], [size mm x3]]}: encode the same
                                 CT again inside a box                              -> 202
    GET  /v1/volumes/{id}/image.nii.gz                        the CT as NIfTI, for display
    GET  /v1/volumes/{id}/results/{rid}/probability           the probability map packed for
                                 re-cutting in the browser (X-Malenia-Maps header says how)
    GET  /v1/volumes/{id}/results/{rid}/files/{kind}?threshold=t   seg.nrrd | labelmap.nii.gz
                                 | report.json, written by the engine's own writers (re-cut
                                 on the server first when t differs from the result's)
    POST /v1/parse               {"text"}: the attributes the parser reads, and what it did not

The page's own data requests use `Authorization: Bearer` like any client (the page carries the
token, and only a request with the cookie gets the page), so a cross-site form cannot use the
cookie to call the API. No route here imports the engine; `EngineBackend` does the work.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from malenia.paths import resource
from malenia.server.jobs import QueueFull, VolumeEntry, VolumeStore
from malenia.viewer.maps import DOWNLOADS, dumps

STATIC = {"app.js": "text/javascript", "niivue.umd.js": "text/javascript"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Nothing from anywhere but this server: the page works offline and leaks nothing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self' data: blob:; worker-src 'self' blob:; "
        "font-src 'self' data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
    ),
}
REFUSED = (
    "<!doctype html><title>MaleniaSegment</title><p>This page needs the server's token. "
    "Open the viewer URL that <code>malenia serve</code> or <code>malenia view</code> printed "
    "(it carries the token once), or read it from the server's token file.</p>"
)


def web_dir() -> Path:
    """Resources/Web: the page, its script and the vendored NiiVue."""
    return resource("Web")


def cookie_name(request: Request) -> str:
    """One cookie per server: cookies are shared across the ports of a host."""
    return f"malenia_{request.url.port or 80}"


def create_router(store: VolumeStore, token: str, authorised, max_upload_bytes: int) -> APIRouter:
    """The viewer's routes. ``authorised`` is the API's bearer-token dependency."""
    router = APIRouter()
    backend = store.backend
    api = [Depends(authorised)]

    def has_cookie(request: Request) -> bool:
        given = request.cookies.get(cookie_name(request), "")
        return hmac.compare_digest(given.encode(), token.encode())

    @router.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return HTMLResponse(REFUSED, 401, headers=PAGE_HEADERS)
            rest = {k: v for k, v in request.query_params.items() if k != "token"}
            target = "/" + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, 303, headers=PAGE_HEADERS)
            response.set_cookie(
                cookie_name(request), token, httponly=True, samesite="strict", path="/"
            )
            return response
        if not has_cookie(request):
            return HTMLResponse(REFUSED, 401, headers=PAGE_HEADERS)
        html = (web_dir() / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("__MALENIA_TOKEN__", token), headers=PAGE_HEADERS)

    @router.get("/web/{name}", include_in_schema=False)
    def static(name: str, request: Request) -> Response:
        if not has_cookie(request):
            raise HTTPException(401, "Open the viewer URL with its token first.")
        if name not in STATIC:
            raise HTTPException(404, f"No viewer file {name}.")
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response((web_dir() / name).read_bytes(), media_type=STATIC[name], headers=headers)

    def submit(volume, roi=None) -> dict:
        try:
            return store.submit(volume, roi).status()
        except QueueFull:
            raise HTTPException(
                503,
                f"The engine is busy: {store.queue_size} volumes are already waiting to be "
                "encoded. Retry in a few seconds.",
                headers={"Retry-After": "5"},
            ) from None

    @router.post("/v1/volumes/sample", status_code=202, dependencies=api)
    async def sample() -> dict:
        """Encode the bundled sample CT (real anatomy with a renal cyst and a liver tumour)."""
        from malenia.io import read_volume

        volume = await run_in_threadpool(read_volume, resource("SampleData", "sample_ct.nii.gz"))
        volume.name = "sample_ct.nii.gz"
        return submit(volume)

    @router.post("/v1/volumes/archive", status_code=202, dependencies=api)
    async def archive(request: Request) -> dict:
        """A zip of one DICOM series, read by the server's own upload reader (the same
        archive, budget and series checks as ``POST /v1/volumes`` with a zip)."""
        from malenia.server.app import _read_limited
        from malenia.server.uploads import ZIP_CONTENT_TYPE, parse_upload

        body = await _read_limited(request, max_upload_bytes)
        headers = {
            "content-type": ZIP_CONTENT_TYPE,
            "x-name": request.headers.get("x-name") or "upload.zip",
            "x-series": request.headers.get("x-series"),
        }
        volume, _ = await run_in_threadpool(parse_upload, headers, body)
        return submit(volume)

    def entry_or_404(volume_id: str) -> VolumeEntry:
        entry = store.get(volume_id)
        if entry is None:
            raise HTTPException(404, f"Unknown volume {volume_id}: load the CT again.")
        return entry

    @router.post("/v1/volumes/{volume_id}/crop", status_code=202, dependencies=api)
    def crop(volume_id: str, body: dict = Body(...)) -> dict:
        """Encode the same CT again, inside a box (the first volume stays)."""
        import json

        from malenia.server.uploads import UploadError, _roi

        entry = entry_or_404(volume_id)
        shape = "[[centre x, y, z RAS mm], [size x, y, z mm]] with sizes > 0"
        try:
            roi = _roi(json.dumps(body.get("roi")))
        except UploadError:
            roi = None
        if roi is None:
            raise HTTPException(400, f"The body needs 'roi': {shape}.")
        volume = _volume_of(entry)
        if volume is None:
            raise HTTPException(409, f"Volume {volume_id} is {entry.state}: load the CT again.")
        return submit(volume, roi)

    @router.get("/v1/volumes/{volume_id}/image.nii.gz", dependencies=api)
    async def image(volume_id: str) -> Response:
        from malenia.viewer.maps import image_nifti

        volume = _volume_of(entry_or_404(volume_id))
        if volume is None:
            raise HTTPException(409, f"Volume {volume_id} was not kept: load the CT again.")
        data = await run_in_threadpool(image_nifti, volume)
        return Response(data, media_type="application/gzip", headers={"Cache-Control": "no-store"})

    def result_of(volume_id: str, result_id: str):
        entry = entry_or_404(volume_id)
        result = entry.results.get(result_id)
        if result is None or entry.encoded is None:
            raise HTTPException(404, "Unknown result (too old, or never made): run it again.")
        return entry, result

    @router.get("/v1/volumes/{volume_id}/results/{result_id}/probability", dependencies=api)
    def probability(volume_id: str, result_id: str) -> Response:
        from malenia.viewer.maps import probability_package

        entry, result = result_of(volume_id, result_id)
        with entry.lock:
            body, meta = probability_package(result)
        headers = {
            "X-Malenia-Maps": dumps(meta),
            "Content-Encoding": "gzip",  # the browser unpacks it; other clients: gzip.decompress
            "Cache-Control": "no-store",
        }
        return Response(body, media_type="application/octet-stream", headers=headers)

    @router.get("/v1/volumes/{volume_id}/results/{result_id}/files/{kind}", dependencies=api)
    def download(volume_id: str, result_id: str, kind: str, threshold: float | None = None):
        from malenia.server.app import _threshold
        from malenia.viewer.maps import file_stem, output_file

        if kind not in DOWNLOADS:
            raise HTTPException(404, f"No download {kind}; choose one of {sorted(DOWNLOADS)}.")
        threshold = _threshold({"threshold": threshold})
        entry, result = result_of(volume_id, result_id)
        with entry.lock:
            if threshold is not None and abs(threshold - result.threshold) > 1e-9:
                result = backend.recut(entry.encoded, result, threshold)
            data = output_file(result, kind)
        name = f"{file_stem(result)}.{kind}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type=DOWNLOADS[kind], headers=headers)

    @router.post("/v1/parse", dependencies=api)
    def parse(body: dict = Body(...)) -> dict:
        """Free text -> attributes, the words behind each, and what was not understood."""
        from malenia.attributes.parser import parse_text

        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(400, "The body needs 'text': a lesion description.")
        parsed = parse_text(text[:2000])
        return {
            "attributes": parsed.description.to_dict(),
            "evidence": parsed.evidence,
            "unparsed": parsed.unparsed,
            "notes": parsed.notes,
            "negated_features": parsed.negated_features,
        }

    return router


def _volume_of(entry: VolumeEntry):
    """The CT an entry holds: waiting to encode, or kept by its encoded volume."""
    if entry.volume is not None:
        return entry.volume
    encoded = entry.encoded
    return encoded.volume if encoded is not None else None
