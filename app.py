"""imageshelf: presigned uploads to S3, renditions made on upload events, a gallery and a JSON API.

Each route parses its input, calls into ``chalicelib`` and answers; the work is there.
"""

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent

from chalicelib import gallery, http, images, openapi, processing, storage, uploads
from chalicelib import reconcile as reconciler
from chalicelib.config import get_settings, upload_bucket_name

app = Chalice(app_name="imageshelf")
app.register_middleware(http.middleware, "http")
processing.log_json_lines(app.log)


@app.route("/ping")
def ping():
    return {"message": "pong"}


@app.route("/openapi.json")
def openapi_json():
    return openapi.document(get_settings())


@app.route("/uploads", methods=["POST"], content_types=uploads.REQUEST_CONTENT_TYPES)
@http.json_errors
def create_upload():
    upload = uploads.create(app.current_request.raw_body, get_settings())
    return http.created(upload, upload["status_url"], app.current_request)


@app.route("/images")
@http.json_errors
def list_images():
    return images.page(app.current_request.query_params, get_settings())


@app.route("/images/{image_id}")
@http.json_errors
def get_image(image_id):
    return images.get(image_id, get_settings())


@app.route("/images/{image_id}", methods=["DELETE"])
@http.json_errors
def delete_image(image_id):
    images.delete(image_id, app.current_request.headers.get("authorization"), get_settings())
    return http.no_content()


@app.route("/")
@http.json_errors
def gallery_page():
    redirect = http.slash_redirect(app.current_request)
    if redirect:
        return redirect
    settings = get_settings()
    return gallery.page_response(images.page({}, settings), settings)


@app.route("/static/{name}")
@http.json_errors
def static_asset(name):
    return gallery.asset_response(name)


@app.on_s3_event(bucket=upload_bucket_name(), events=["s3:ObjectCreated:*"], prefix=storage.UPLOAD_PREFIX)
def resize(event):
    request_id = getattr(event.context, "aws_request_id", None)
    processing.process_upload(event.bucket, event.key, get_settings(), request_id, line_log=app.log)


# Re-drives uploads that never settled, drains the resize function's dead-letter queue, removes
# what belongs to no original (docs/convergence.md). `make run` runs it at start and every minute.
@app.schedule(Rate(5, unit=Rate.MINUTES))
def reconcile(event: CloudWatchEvent) -> None:
    reconciler.run(get_settings(), line_log=app.log)
