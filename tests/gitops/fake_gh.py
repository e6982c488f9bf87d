"""A recording stand-in for the `gh` command, for the GitOps script tests.

The tests write this file into tmp_path as an executable named `gh` and put its folder
first on PATH.  It answers the `gh api` calls the scripts make from a JSON document
($FAKE_GH_STATE) the test prepares and reads back: pull-request comments (kept, with ids,
as GitHub keeps them), changed files, workflow runs.  Every call is appended to
$FAKE_GH_CALLS (argv, method, endpoint, body).  Like GitHub it rejects a comment body
longer than 65536 characters (HTTP 422), and it pages lists 100 a page, printing one JSON
array per page under --paginate, as `gh api --paginate` does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from urllib.parse import parse_qs, urlsplit

LIMIT = 65536


def load() -> dict:
    with open(os.environ["FAKE_GH_STATE"]) as f:
        return json.load(f)


def save(state: dict) -> None:
    with open(os.environ["FAKE_GH_STATE"], "w") as f:
        json.dump(state, f, indent=1)


def fail(status: int, message: str) -> None:
    print(f"gh: {message} (HTTP {status})", file=sys.stderr)
    sys.exit(1)


def pages(items: list, paginate: bool, per_page: int) -> None:
    if not paginate:
        print(json.dumps(items[:per_page]))
        return
    chunks = [items[i:i + per_page] for i in range(0, len(items), per_page)] or [[]]
    sys.stdout.write("".join(json.dumps(c) for c in chunks) + "\n")


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "api":
        fail(400, f"the fake gh only knows `gh api`, not {argv[:1]}")
    method, endpoint, paginate, body = "GET", None, False, None
    args = iter(argv[1:])
    for arg in args:
        if arg in ("--method", "-X"):
            method = next(args)
        elif arg == "--paginate":
            paginate = True
        elif arg == "--input":
            source = next(args)
            body = json.loads(sys.stdin.read() if source == "-" else open(source).read())
        elif arg.startswith("-"):
            fail(400, f"the fake gh does not know {arg}")
        else:
            endpoint = arg
    with open(os.environ["FAKE_GH_CALLS"], "a") as f:
        f.write(json.dumps({"argv": argv, "method": method, "endpoint": endpoint,
                            "body": body}) + "\n")

    url = urlsplit(endpoint)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    per_page = int(query.get("per_page", 30))
    path = url.path.strip("/")
    state = load()
    comments = state.setdefault("comments", {})

    if m := re.fullmatch(r"repos/([^/]+/[^/]+)/issues/(\d+)/comments", path):
        if m.group(1) != state["repo"]:
            fail(404, "Not Found")
        thread = comments.setdefault(m.group(2), [])
        if method == "GET":
            return pages(thread, paginate, per_page)
        if method == "POST":
            if len(body["body"]) > LIMIT:
                fail(422, "Validation Failed: body is too long (maximum is 65536 characters)")
            state["next_id"] = state.get("next_id", 1000) + 1
            comment = {"id": state["next_id"], "body": body["body"],
                       "html_url": f"https://github.com/{state['repo']}/pull/{m.group(2)}"
                                   f"#issuecomment-{state['next_id']}"}
            thread.append(comment)
            save(state)
            return print(json.dumps(comment))
    if m := re.fullmatch(r"repos/([^/]+/[^/]+)/issues/comments/(\d+)", path):
        if method == "PATCH":
            if len(body["body"]) > LIMIT:
                fail(422, "Validation Failed: body is too long (maximum is 65536 characters)")
            for thread in comments.values():
                for comment in thread:
                    if comment["id"] == int(m.group(2)):
                        comment["body"] = body["body"]
                        save(state)
                        return print(json.dumps(comment))
            fail(404, "Not Found")
    if m := re.fullmatch(r"repos/([^/]+/[^/]+)/pulls/(\d+)/files", path):
        if method == "GET":
            files = [{"filename": f} for f in state.get("files", {}).get(m.group(2), [])]
            return pages(files, paginate, per_page)
    if m := re.fullmatch(r"repos/([^/]+/[^/]+)/actions/workflows/([^/]+)/runs", path):
        if method == "GET":
            runs = [r for r in state.get("runs", {}).get(m.group(2), [])
                    if r["head_sha"] == query.get("head_sha")
                    and r.get("event", "pull_request") == query.get("event", r.get("event"))]
            return print(json.dumps({"total_count": len(runs), "workflow_runs": runs}))
    fail(404, f"the fake gh does not serve {method} {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
