"""The API's page-number pagination."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class PageNumbers(PageNumberPagination):
    """DRF's page numbers, except that an empty `?page=` is refused like any other page that is
    not a number (404 "Invalid page."), where DRF took it for the first page: the schema says
    `page` is an integer (schemathesis found it, SECURITY.md round 7)."""

    def get_page_number(self, request, paginator):
        page = request.query_params.get(self.page_query_param)
        if page is not None and not page.strip():
            raise NotFound(
                self.invalid_page_message.format(page_number=page, message="No page number.")
            )
        return super().get_page_number(request, paginator)
