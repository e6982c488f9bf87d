"""Render a plan comment (GitHub-flavoured Markdown) to a PNG the way GitHub shows it.

    python docs/images/render_comment.py COMMENT.md OUT.png [HEIGHT]

Used once to make docs/images/gitops-plan-comment.png from the exact text the plan job
posts (docs/gitops.md shows that text too).  Markdown becomes HTML with markdown-it-py
(installed with rich) with tables on and raw HTML kept, as GitHub renders comments;
```diff blocks get the line colours of GitHub's diff grammar (`+`, `-`, `!`); the
<details> sections, collapsed on GitHub until clicked, are shown open.  A headless
Chromium (Debian's `chromium-headless-shell`) takes the screenshot.  Not part of the
tests: the image is documentation.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from markdown_it import MarkdownIt

CSS = """
body { margin: 0; padding: 16px; background: #f6f8fa;
  font: 14px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
  color: #1f2328; }
.comment { max-width: 860px; border: 1px solid #d1d9e0; border-radius: 6px;
  background: #fff; }
.header { background: #f6f8fa; border-bottom: 1px solid #d1d9e0; padding: 8px 16px;
  border-radius: 6px 6px 0 0; color: #59636e; }
.header b { color: #1f2328; }
.body { padding: 16px; }
h3 { font-size: 1.25em; margin: 16px 0 12px; }
p, blockquote, table, pre, details { margin: 0 0 12px; }
code { font: 85% "DejaVu Sans Mono", monospace; background: #818b981f; padding: .2em .4em;
  border-radius: 6px; }
pre { background: #f6f8fa; padding: 12px 16px; border-radius: 6px; overflow: auto; }
pre code { background: none; padding: 0; font-size: 85%; line-height: 1.45; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d1d9e0; padding: 6px 13px; }
th { font-weight: 600; } tr:nth-child(2n) { background: #f6f8fa; }
blockquote { color: #59636e; border-left: .25em solid #d1d9e0; padding: 0 1em; margin-left: 0; }
summary { cursor: pointer; }
a { color: #0969da; text-decoration: none; }
.add { color: #116329; background: #dafbe1; display: block; }
.del { color: #82071e; background: #ffebe9; display: block; }
.chg { color: #953800; background: #fff1e5; display: block; }
.ctx { display: block; }
"""


def _diff_lines(match: re.Match) -> str:
    lines = html.unescape(match.group(1)).rstrip("\n").split("\n")
    out = []
    for line in lines:
        cls = {"+": "add", "-": "del", "!": "chg"}.get(line[:1], "ctx")
        out.append(f'<span class="{cls}">{html.escape(line) or "&nbsp;"}</span>')
    return '<pre><code class="language-diff">' + "".join(out) + "</code></pre>"


def to_html(markdown: str) -> str:
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    body = re.sub(r'<pre><code class="language-diff">(.*?)</code></pre>', _diff_lines, body,
                  flags=re.S)
    body = body.replace("<details>", "<details open>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head>"
            f"<body><div class='comment'><div class='header'><b>github-actions</b> "
            f"<span>bot</span> commented</div><div class='body'>{body}</div></div>"
            f"</body></html>")


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    height = int(sys.argv[3]) if len(sys.argv) > 3 else 620   # the page's height, pixels
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        sys.exit("no headless Chromium: apt-get install chromium-headless-shell")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "comment.html"
        page.write_text(to_html(source.read_text()))
        subprocess.run([browser, "--no-sandbox", "--hide-scrollbars", "--disable-gpu",
                        f"--screenshot={out.resolve()}", f"--window-size=900,{height}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)


if __name__ == "__main__":
    main()
