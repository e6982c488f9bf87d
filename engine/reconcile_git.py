"""Where `mlform reconcile` reads the spec from: a git repository or a directory.

A `GitSource` keeps one checkout of the repository: it clones once, then at each
cycle fetches and resets hard to the remote branch, so the checkout is exactly the
branch's last commit (local edits to tracked files are discarded, as a GitOps agent
must).  Untracked files are left alone on purpose: the local state backend and the
memory provider's store live under `<stack>/.mlform/`, inside the checkout.
A `DirectorySource` uses a directory as it is ("watching a directory").

git is run as the git CLI (what the runner's image has, with its credential helpers),
never interactively, in its own process group so a Ctrl-C meant for mlform does not
kill a fetch half way.  Failures are `SourceError`s with git's own last words, the
remote's URL shown without credentials.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Checkout", "DirectorySource", "GitSource", "SourceError", "redact_url"]

#: seconds one git command may take before the cycle gives up on it
GIT_TIMEOUT_S = 300.0


class SourceError(Exception):
    """The spec could not be pulled; the cycle fails and the next one tries again."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Checkout:
    """The stack directory to plan, and the commit it holds ("" for a plain directory)."""

    stack_dir: Path
    revision: str = ""


class DirectorySource:
    """A directory used as it is: whatever is there at the start of a cycle is the spec."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"directory {self.directory}"

    def pull(self) -> Checkout:
        if not self.directory.is_dir():
            raise SourceError(f"The stack directory {self.directory} does not exist")
        return Checkout(self.directory)


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact_url(text: str) -> str:
    """`https://user:token@host/x` -> `https://***@host/x`, wherever it appears."""
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)


class GitSource:
    """One checkout of `url` at `checkout`; the stack is `subdir` inside the repository."""

    def __init__(self, url: str, checkout: Path, *, branch: str | None = None,
                 subdir: Path = Path("."), timeout_s: float = GIT_TIMEOUT_S) -> None:
        self.url = url
        self.checkout = Path(checkout)
        self.branch = branch
        self.subdir = Path(subdir)
        self.timeout_s = timeout_s

    def describe(self) -> str:
        where = f" ({self.subdir})" if str(self.subdir) not in ("", ".") else ""
        return f"git {redact_url(self.url)}{' branch ' + self.branch if self.branch else ''}{where}"

    def pull(self) -> Checkout:
        if (self.checkout / ".git").exists():
            self._check_origin()
            branch = self.branch or self._default_branch()
            refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
            self._git("fetch", "--prune", "--no-tags", "origin", refspec,
                      what=f"Cannot fetch {redact_url(self.url)}")
        else:
            if self.checkout.exists() and any(self.checkout.iterdir()):
                raise SourceError(f"{self.checkout} is not empty and is not a git checkout",
                                  hint="Point --checkout at an empty or missing directory.")
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            args = ["clone", "--no-tags", "--single-branch"]
            if self.branch:
                args += ["--branch", self.branch]
            self._git(*args, "--", self.url, str(self.checkout), cwd=self.checkout.parent,
                      what=f"Cannot clone {redact_url(self.url)}")
            branch = self.branch or self._default_branch()
        self._git("reset", "--quiet", "--hard", f"refs/remotes/origin/{branch}",
                  what=f"Cannot check out branch {branch} of {redact_url(self.url)}")
        revision = self._git("rev-parse", "HEAD", what="Cannot read the checked-out commit")
        stack_dir = self.checkout / self.subdir
        if not stack_dir.is_dir():
            raise SourceError(f"The repository has no directory {self.subdir} at {revision[:12]}",
                              hint="Pass the stack's path inside the repository as DIR.")
        return Checkout(stack_dir, revision)

    # ------------------------------------------------------------ helpers

    def _check_origin(self) -> None:
        origin = self._git("remote", "get-url", "origin", what="Cannot read the checkout's origin")
        if origin != self.url:
            raise SourceError(
                f"{self.checkout} is a checkout of {redact_url(origin)}, not of "
                f"{redact_url(self.url)}",
                hint="Use another --checkout directory, or remove this one.")

    def _default_branch(self) -> str:
        """The branch the clone checked out (the remote's default when none was named)."""
        ref = self._git("symbolic-ref", "--quiet", "--short", "HEAD",
                        what="Cannot tell which branch to follow",
                        hint="Name it with --branch.")
        return ref

    def _git(self, *args: str, what: str, cwd: Path | None = None, hint: str = "") -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        # never wait for a password or a host key prompt: a daemon has no one to answer
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        command = ["git", *args] if cwd is not None else ["git", "-C", str(self.checkout), *args]
        try:
            done = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=self.timeout_s,
                                  start_new_session=True)
        except FileNotFoundError:
            raise SourceError("git is not installed (reconcile --git runs the git command)",
                              hint="Install git, or reconcile a directory without --git.") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"{what}: git {args[0]} took more than {self.timeout_s:g} s",
                              hint=hint or "The next cycle tries again.") from None
        if done.returncode != 0:
            said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            # git's first `fatal:` line names the cause; what follows is generic advice
            cause = next((line for line in said if line.startswith(("fatal:", "error:"))),
                         said[-1] if said else f"git {args[0]} exited {done.returncode}")
            raise SourceError(f"{what}: {redact_url(cause)}",
                              hint=hint or "The next cycle tries again.")
        return done.stdout.strip()
