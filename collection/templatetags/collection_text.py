"""Template filters of the collection pages: campaign instructions as Markdown, safely.

`{% load collection_text %}` then `{{ campaign.instructions|markdown }}`.
"""

from django import template
from django.utils.safestring import mark_safe
from markdown_it import MarkdownIt

register = template.Library()

# CommonMark with raw HTML off: an HTML tag in the text is shown as text (escaped), never
# passed through. markdown-it's link validation drops javascript:, vbscript:, file: and
# non-image data: URLs, so such a link stays plain text. Links open as ordinary links; the
# page's Content-Security-Policy still applies.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_MARKDOWN.disable("image")  # instructions are text: no images fetched from elsewhere


def _open_links_safely(renderer, tokens, index, options, env):
    tokens[index].attrSet("rel", "noopener noreferrer nofollow")
    return renderer.renderToken(tokens, index, options, env)


_MARKDOWN.add_render_rule("link_open", _open_links_safely)


@register.filter(is_safe=False)
def markdown(text) -> str:
    """Markdown → HTML with every raw HTML tag escaped and unsafe link schemes left as text."""
    return mark_safe(_MARKDOWN.render(str(text or "")))
