"""(interim: replaced by the gallery work)"""
from chalice import Response


def page_response(first_page, settings, origins):
    return Response(body="<h1>imageshelf</h1>", headers={"Content-Type": "text/html; charset=utf-8"})


def asset_response(name):
    from .errors import ImageshelfError
    raise ImageshelfError("not_found", "no such asset")
