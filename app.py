"""imageshelf: presigned uploads to S3, renditions made on upload events, a gallery and a JSON API.

Each route parses its input, calls into ``chalicelib`` and answers; the work is there.
"""

from typing import Any

from chalice import Chalice, Rate, Response
from chalice.app import CloudWatchEvent, S3Event

from chalicelib import gallery, http, images, openapi, processing, storage, uploads
from chalicelib import reconcile as reconciler
from chalicelib.config import get_settings, upload_bucket_name

app = Chalice(app_name="imageshelf")
app.register_middleware(http.middleware, "http")
processing.log_json_lines(app.log)
# The JSON API's CORS for the stage's ALLOWED_ORIGINS (chalicelib/http.py says how); not the gallery's.
CORS = http.cors_config(get_settings())


@app.route("/ping", cors=CORS)
def ping() -> dict[str, str]:
    return {"message": "pong"}


@app.route("/openapi.json", cors=CORS)
def openapi_json() -> dict[str, Any]:
    return openapi.document(get_settings())


@app.route("/uploads", methods=["POST"], content_types=uploads.REQUEST_CONTENT_TYPES, cors=CORS)
@http.json_errors
def create_upload() -> Response:
    request = http.current(app)
    upload = uploads.create(http.body(request), get_settings(), http.authorization(request))
    return http.created(upload, upload["status_url"], request)


@app.route("/images", cors=CORS)
@http.json_errors
def list_images() -> dict[str, Any]:
    return images.page(http.query(http.current(app)), get_settings())


@app.route("/images/{image_id}", cors=CORS)
@http.json_errors
def get_image(image_id: str) -> dict[str, Any]:
    return images.get(image_id, get_settings())


@app.route("/images/{image_id}", methods=["DELETE"], cors=CORS)
@http.json_errors
def delete_image(image_id: str) -> Response:
    images.delete(image_id, http.authorization(http.current(app)), get_settings())
    return http.no_content()


@app.route("/")
@http.json_errors
def gallery_page() -> Response:
    redirect = http.slash_redirect(http.current(app))
    if redirect:
        return redirect
    settings = get_settings()
    return gallery.page_response(images.page({}, settings), settings)


@app.route("/static/{name}")
@http.json_errors
def static_asset(name: str) -> Response:
    return gallery.asset_response(name)


@app.on_s3_event(bucket=upload_bucket_name(), events=["s3:ObjectCreated:*"], prefix=storage.UPLOAD_PREFIX)
def resize(event: S3Event) -> None:
    request_id = getattr(event.context, "aws_request_id", None)
    processing.process_upload(event.bucket, event.key, get_settings(), request_id, line_log=app.log)


# Re-drives uploads that never settled, drains the resize function's dead-letter queue, removes
# what belongs to no original (docs/convergence.md). `make run` runs it at start and every minute.
@app.schedule(Rate(5, unit=Rate.MINUTES))
def reconcile(event: CloudWatchEvent) -> None:
    reconciler.run(get_settings(), line_log=app.log)
