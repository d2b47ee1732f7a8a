"""imageshelf: presigned uploads to S3, renditions made on upload events, a gallery and a JSON API.

Each route parses its input, calls into ``chalicelib`` and answers; the work is there.
"""

from typing import Any

from chalice import Chalice, Rate, Response
from chalice.app import CloudWatchEvent, S3Event

from chalicelib import gallery, http, images, microservice, openapi, processing, renders, storage, uploads
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


@app.route("/images/{image_id}/render", cors=CORS)
@http.json_errors
def render_image(image_id: str) -> Response:
    return _render(image_id)


@app.route("/images/{image_id}/info", cors=CORS)
@http.json_errors
def image_info(image_id: str) -> dict[str, Any]:
    return renders.info(image_id, get_settings())


@app.route("/sample/render", cors=CORS)
@http.json_errors
def render_sample() -> Response:
    return _render(renders.SAMPLE)


@app.route("/sample/info", cors=CORS)
@http.json_errors
def sample_info() -> dict[str, Any]:
    return renders.info(renders.SAMPLE, get_settings())


def _render(subject: str) -> Response:
    request = http.current(app)
    params, accept = http.query_lists(request), http.header(request, "accept")
    rendered = renders.render(subject, params, accept, get_settings())
    return http.redirect(rendered.url, rendered.vary_accept)


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


# imageshelf as an image-operations microservice: other AWS services and SDK clients invoke it
# with {"operation": "resize", "id": ..., "w": 800} and get JSON with URLs (chalicelib/microservice.py).
@app.lambda_function(name="operations")
def operations(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return microservice.invoke(event, get_settings())
