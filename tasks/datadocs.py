"""Great Expectations Data Docs that render with no network: static HTML, no script, no CDN.

GX's page templates load jQuery, Bootstrap, bootstrap-table, Font Awesome and vega from CDNs, and its tables
(the index's list of validation results among them) are filled in by bootstrap-table in the browser. Offline,
or inside MLflow's artifact viewer (a sandboxed ``blob:`` iframe where no relative asset resolves), such a
page lists nothing. The views here are the GX page views with two changes:

* the table template renders every table on the server (a plain ``<table>``, sorted as GX asks, each row
  linking to its page) and the graph template shows the vega-lite spec as JSON text;
* the finished page keeps no ``<script>`` and no resource from the network (external stylesheets, images,
  CSS ``url()`` are dropped; an image becomes its alt text); a small inline stylesheet
  (:data:`OFFLINE_CSS`) replaces Bootstrap's look and Font Awesome's status icons.

So every page is one self-contained HTML file: it opens from disk, from a downloaded MLflow artifact and in
MLflow's artifact viewer alike. :func:`site_config` is the GX ``SiteBuilder`` config that uses these views;
:func:`external_resources` lists what a page would still load from the network (the tests assert it is empty).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import ChoiceLoader, DictLoader

_MODULE = __name__

_STATIC_TABLE = """\
{% include 'content_block_header.j2' %}
{% if "styling" in content_block and "body" in content_block["styling"] -%}
  {% set content_block_body_styling = content_block["styling"]["body"] | render_styling -%}
{% else -%}
  {% set content_block_body_styling = "" -%}
{% endif -%}
{% set table_columns = content_block["table_columns"] %}
{% set rows = content_block["table_data"] | render_bootstrap_table_data
              | lmforge_sort_rows(table_columns, content_block.get("table_options", {})) %}
<table id="{{ content_block_id ~ '-body-table' }}"
  {{ content_block_body_styling | replace("{{section_id}}", section_id)
     | replace("{{content_block_id}}", content_block_id) }}>
  <thead><tr>{% for column in table_columns %}<th>{{ column.get("title", "") }}</th>{% endfor %}</tr></thead>
  <tbody>
  {%- for row in rows %}
    <tr>{% for column in table_columns %}{% set cell = row.get(column["field"], "") | string %}<td>
      {%- if row.get("_table_row_link_path") and "<a " not in cell -%}
        <a class="lmforge-row-link" href="{{ row["_table_row_link_path"] }}">{{ cell | safe }}</a>
      {%- else -%}{{ cell | safe }}{%- endif -%}
    </td>{% endfor %}</tr>
  {%- endfor %}
  </tbody>
</table>
"""

_STATIC_GRAPH = """\
{% include 'content_block_header.j2' %}
<details class="lmforge-graph"><summary>Chart (vega-lite spec; charts need a script and are not drawn in the
offline Data Docs)</summary><pre>{{ content_block["graph"] | string | e }}</pre></details>
"""

OFFLINE_CSS = """\
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;
  color:#212529;line-height:1.45;font-size:15px}
a{color:#0b62c4}
.container-fluid{padding:1rem 2rem}
.navbar{display:flex;align-items:center;gap:1rem;padding:.5rem 2rem;border-bottom:1px solid #dee2e6}
.row{display:flex;flex-wrap:wrap}
.col-md-2{flex:0 0 16%;max-width:16%;box-sizing:border-box;padding-right:1rem}
.col-md-10{flex:1 1 0;min-width:0}
table{border-collapse:collapse;margin:.4rem 0 1rem}
th,td{border:1px solid #dee2e6;padding:.3rem .6rem;text-align:left;vertical-align:top}
thead th{background:#f1f3f5}
.lmforge-row-link{display:block;color:inherit;text-decoration:none}
tr:hover .lmforge-row-link{text-decoration:underline}
.card{border:1px solid #dee2e6;border-radius:4px;margin:.5rem 0;padding:.5rem}
.badge{display:inline-block;padding:.1em .45em;border-radius:4px;background:#6c757d;color:#fff;font-size:85%}
.text-danger{color:#c82333}.text-success{color:#1e7e34}.text-warning{color:#b8860b}
.fas,.far,.fa{font-style:normal}
[class*="fa-times"]::before,[class*="fa-xmark"]::before{content:"\\2717"}
[class*="fa-check"]::before{content:"\\2713"}
[class*="fa-exclamation"]::before{content:"!"}
[class*="fa-question"]::before{content:"?"}
[onclick],.invisible,#ge-cta-footer{display:none}
footer,.sticky-top,.fixed-bottom{position:static!important}
footer{border-top:1px solid #dee2e6;padding:.5rem 2rem;margin-top:1rem}
.lmforge-graph pre{white-space:pre-wrap;font-size:12px}
"""

_EXTERNAL = r"(?:https?:)?//"
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.S | re.I)
_LINK = re.compile(r"<link\b[^>]*?\shref\s*=\s*[\"']?\s*" + _EXTERNAL + r"[^>]*>", re.I)
_IMG = re.compile(r"<img\b[^>]*?\ssrc\s*=\s*[\"']?\s*" + _EXTERNAL + r"[^>]*>", re.I)
_ALT = re.compile(r"\salt\s*=\s*\"([^\"]*)\"", re.I)
_CSS_URL = re.compile(r"url\(\s*[\"']?\s*" + _EXTERNAL + r"[^)]*\)", re.I)
_CSS_IMPORT = re.compile(r"@import\s+(?:url\()?\s*[\"']?\s*" + _EXTERNAL + r"[^;]*;", re.I)
# any other element's attribute that loads from the network (iframe, source, embed, object, form ...); an `a`
# only navigates when clicked, so its links stay
_OPEN_TAG = re.compile(r"<(?!a[\s>])[a-zA-Z][\w-]*\b[^>]*>", re.S)
_URL_ATTR = re.compile(r"\s(?:src|srcset|href|data|poster|action|formaction|background)\s*=\s*(?:\"\s*" + _EXTERNAL
                       + r"[^\"]*\"|'\s*" + _EXTERNAL + r"[^']*'|" + _EXTERNAL + r"[^\s>]*)", re.I)


def _strip_url_attrs(html: str) -> str:
    return _OPEN_TAG.sub(lambda m: _URL_ATTR.sub("", m.group(0)), html)


def make_offline(html: str) -> str:
    """``html`` with no script and nothing loaded from the network, plus :data:`OFFLINE_CSS` in its head."""
    html = _SCRIPT.sub("", html)
    html = _LINK.sub("", html)
    html = _IMG.sub(lambda m: (f"<span>{alt.group(1)}</span>" if (alt := _ALT.search(m.group(0))) else ""), html)
    html = _CSS_IMPORT.sub("", html)
    html = _CSS_URL.sub("none", html)
    html = _strip_url_attrs(html)
    style = f"<style>{OFFLINE_CSS}</style>"
    head_end = re.search(r"</head\s*>", html, re.I)
    return html[:head_end.start()] + style + html[head_end.start():] if head_end else style + html


def external_resources(html: str) -> list[str]:
    """Every script, stylesheet, image, other element or CSS ``url()`` in ``html`` that would fetch from the
    network."""
    found = [m.group(0) for m in re.finditer(r"<script\b[^>]*\ssrc\s*=[^>]*>", html, re.I)]
    for pattern in (_LINK, _IMG, _CSS_URL, _CSS_IMPORT):
        found += [m.group(0) for m in pattern.finditer(html)]
    found += [m.group(0) for m in _OPEN_TAG.finditer(html) if _URL_ATTR.search(m.group(0))]
    return found


def _sort_rows(rows: list[dict], columns: list[dict], options: dict) -> list[dict]:
    """Rows in the order bootstrap-table would show first: ``sortName``/``sortOrder`` of the table options."""
    name = options.get("sortName")
    if not name:
        return list(rows)
    column = next((c for c in columns if c.get("field") == name), {})
    key = column.get("sortName") or name
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    try:
        ordered = sorted(present, key=lambda r: r[key], reverse=options.get("sortOrder") == "desc")
    except TypeError:
        ordered = sorted(present, key=lambda r: str(r[key]), reverse=options.get("sortOrder") == "desc")
    return ordered + missing


class _Offline:
    """Mixin for GX Jinja page views: static table and graph templates, offline post-processing."""

    def _offline_env(self) -> None:
        env = self.env  # type: ignore[attr-defined]
        env.loader = ChoiceLoader([DictLoader({"bootstrap_table.j2": _STATIC_TABLE, "graph.j2": _STATIC_GRAPH}),
                                   env.loader])
        env.filters["lmforge_sort_rows"] = _sort_rows


class OfflinePageView(_Offline, DefaultJinjaPageView):
    """GX's page view (validation results, expectation suites) rendering a self-contained static page."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offline_env()

    def render(self, document: Any, template: Any = None, **kwargs: Any) -> str:
        return make_offline(super().render(document, template, **kwargs))


class OfflineIndexPageView(_Offline, DefaultJinjaIndexPageView):
    """GX's site index view rendering a self-contained static page."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offline_env()

    def render(self, document: Any, template: Any = None, **kwargs: Any) -> str:
        return make_offline(super().render(document, template, **kwargs))


def site_config(base_directory: Path) -> dict[str, Any]:
    """A GX ``SiteBuilder`` config writing the offline Data Docs site to ``base_directory``."""
    page = {"module_name": _MODULE, "class_name": OfflinePageView.__name__}
    return {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                               "view": {"module_name": _MODULE, "class_name": OfflineIndexPageView.__name__}},
        "site_section_builders": {name: {"view": dict(page)} for name in ("expectations", "validations",
                                                                           "profiling")},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(base_directory)},
    }
