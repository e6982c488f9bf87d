"""Who runs a command: the user, the host and the CI pipeline, read from the environment.

The state lock names its holder with it, a plan hold its pull request's run, and the
audit trail each record's author.  The CI part is an allow-list of variables per CI
system: CI environments also carry tokens (GITHUB_TOKEN, CI_JOB_TOKEN, ...), which must
never be written next to the state.
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Mapping

#: (key in the identity, environment variable) per CI system
_GITHUB = (("actor", "GITHUB_ACTOR"), ("repository", "GITHUB_REPOSITORY"),
           ("run_id", "GITHUB_RUN_ID"), ("sha", "GITHUB_SHA"), ("ref", "GITHUB_REF"),
           ("workflow", "GITHUB_WORKFLOW"), ("event", "GITHUB_EVENT_NAME"))
_GITLAB = (("actor", "GITLAB_USER_LOGIN"), ("project", "CI_PROJECT_PATH"),
           ("pipeline_id", "CI_PIPELINE_ID"), ("sha", "CI_COMMIT_SHA"),
           ("ref", "CI_COMMIT_REF_NAME"), ("job_url", "CI_JOB_URL"),
           ("merge_request", "CI_MERGE_REQUEST_IID"))


def user() -> str:
    """The user name; the uid where there is no passwd entry (containers)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry: a lock, hold or record must still be made
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def host() -> str:
    return socket.gethostname()


def ci_identity(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CI run this process belongs to: ``{"system": "github"|"gitlab"|"ci", ...}``
    from the allow-listed variables, or {} outside CI."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true" or env.get("GITHUB_RUN_ID"):
        ci = {"system": "github", **{k: env[v] for k, v in _GITHUB if env.get(v)}}
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            ci["run_url"] = (f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/"
                             f"{env['GITHUB_RUN_ID']}")
        return ci
    if env.get("GITLAB_CI") == "true" or env.get("CI_PIPELINE_ID") or env.get("GITLAB_USER_LOGIN"):
        return {"system": "gitlab", **{k: env[v] for k, v in _GITLAB if env.get(v)}}
    if env.get("CI", "").lower() in ("true", "1", "yes"):
        return {"system": "ci"}
    return {}


def ci_text(ci: Mapping[str, str]) -> str:
    """A CI identity in words: "GitHub Actions run 7001 of acme/churn by alice" ("" for
    none)."""
    system = ci.get("system")
    if system == "github":
        parts = [f"GitHub Actions run {ci.get('run_id', '?')}"]
        where = ci.get("repository")
    elif system == "gitlab":
        parts = [f"GitLab pipeline {ci.get('pipeline_id', '?')}"]
        where = ci.get("project")
    elif system == "ci":
        return "a CI run"
    else:
        return ""
    if where:
        parts.append(f"of {where}")
    if ci.get("actor"):
        parts.append(f"by {ci['actor']}")
    return " ".join(parts)


__all__ = ["user", "host", "ci_identity", "ci_text"]
