"""`mlops-nb ci init`: the CI workflow files for GitHub Actions and GitLab CI.

Each file is built as data and dumped as YAML, never by pasting text: the set-up command and
every value a repository controls (branch names in particular) reach the shell through
environment variables, not through `${{ }}` expressions inside a script, so a branch named
`$(curl ...)` is a string, not a command. The workflow's logic is `mlops-nb ci run`; the file
only sets up, calls it, and publishes its report. No token is written into a file: GitHub's
own `github.token` posts the pull-request comment; GitLab needs a project access token in the
masked variable `MLOPS_NB_GITLAB_TOKEN` to comment (without it the report is an artifact).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import UsageError

GITHUB = ".github/workflows/mlops.yml"
GITLAB = ".gitlab-ci.yml"
NIGHTLY = "17 3 * * *"  # off the hour: scheduled runs on the hour queue behind everyone's


def default_setup(root: Path) -> str:
    """The project's own set-up, as a user would run it on a fresh machine."""
    if (root / "scripts" / "setup.sh").is_file():
        return "bash scripts/setup.sh"
    if (root / "requirements.txt").is_file():
        return "python -m pip install -r requirements.txt"
    if (root / "pyproject.toml").is_file():
        return "python -m pip install -e ."
    return "python -m pip install mlops_nb"


# after the set-up, the project's .venv (when it made one) comes first on PATH
_VENV_PATH = 'if [ -d .venv/bin ]; then echo "$PWD/.venv/bin" >> "$GITHUB_PATH"; fi'
# nightly: the continuous-training triggers; the default branch: the gate, then deploy to
# staging and production; a pull request: the checks and a report, nothing promoted
_RUN = ('if [ "$EVENT" = schedule ]; then mlops-nb trigger --schedule; exit; fi\n'
        'deploy=""\n'
        'if [ "$EVENT" = push ] && [ "$REF" = "refs/heads/$DEFAULT_BRANCH" ]; then'
        ' deploy=--deploy; fi\n'
        'mlops-nb ci run --base "origin/${BASE:-$DEFAULT_BRANCH}" $deploy')
_COMMENT = ('gh pr comment "$PR" --body-file ci-report/report.md --edit-last'
            ' || gh pr comment "$PR" --body-file ci-report/report.md')


def github(setup: str) -> dict[str, Any]:
    env = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
    return {
        "name": "mlops-nb",
        "on": {"pull_request": None, "push": {"branches": ["main"]},
               "schedule": [{"cron": NIGHTLY}], "workflow_dispatch": None},
        "permissions": {"contents": "read", "pull-requests": "write"},
        "concurrency": {"group": "mlops-nb-${{ github.ref }}", "cancel-in-progress": True},
        "jobs": {"pipeline": {
            "runs-on": "ubuntu-latest",
            "timeout-minutes": 60,
            "env": env,
            "steps": [
                {"uses": "actions/checkout@v4", "with": {"fetch-depth": 0}},
                {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
                {"name": "Set up (the project's own set-up)", "run": setup},
                {"name": "Put the project's environment on PATH", "run": _VENV_PATH},
                {"name": "mlops-nb ci run", "run": _RUN,
                 "env": {"BASE": "${{ github.base_ref }}", "EVENT": "${{ github.event_name }}",
                         "REF": "${{ github.ref }}",
                         "DEFAULT_BRANCH": "${{ github.event.repository.default_branch }}"}},
                {"name": "Report on the pull request",
                 "if": "always() && github.event_name == 'pull_request'",
                 "run": _COMMENT,
                 "env": {"GH_TOKEN": "${{ github.token }}",
                         "PR": "${{ github.event.pull_request.number }}"}},
                {"name": "Keep the report", "if": "always()",
                 "uses": "actions/upload-artifact@v4",
                 "with": {"name": "ci-report", "path": "ci-report/",
                          "if-no-files-found": "ignore"}},
            ]}},
    }


_GITLAB_RUN = [
    'base="${CI_MERGE_REQUEST_TARGET_BRANCH_NAME:-$CI_DEFAULT_BRANCH}"',
    'git fetch --quiet origin "$base"',
    'deploy=""',
    'if [ "$CI_COMMIT_BRANCH" = "$CI_DEFAULT_BRANCH" ] && [ "$CI_PIPELINE_SOURCE" = push ];'
    ' then deploy=--deploy; fi',
    'if [ "$CI_PIPELINE_SOURCE" = schedule ]; then mlops-nb trigger --schedule;'
    ' else mlops-nb ci run --base "origin/$base" $deploy; fi',
]
_GITLAB_COMMENT = [
    'if [ -n "${MLOPS_NB_GITLAB_TOKEN:-}" ] && [ -n "${CI_MERGE_REQUEST_IID:-}" ]'
    ' && [ -f ci-report/report.md ]; then'
    ' curl --silent --show-error --fail --header "PRIVATE-TOKEN: $MLOPS_NB_GITLAB_TOKEN"'
    ' --data-urlencode "body@ci-report/report.md"'
    ' "$CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$CI_MERGE_REQUEST_IID/notes";'
    ' fi',
]


def gitlab(setup: str) -> dict[str, Any]:
    return {
        "stages": ["pipeline"],
        "variables": {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "GIT_DEPTH": "0"},
        "mlops-nb": {
            "stage": "pipeline",
            "image": "python:3.11",
            "rules": [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'},
                      {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"},
                      {"if": '$CI_PIPELINE_SOURCE == "schedule"'}],
            "before_script": [setup, 'if [ -d .venv/bin ]; then'
                                     ' export PATH="$PWD/.venv/bin:$PATH"; fi'],
            "script": _GITLAB_RUN,
            "after_script": _GITLAB_COMMENT,
            "artifacts": {"when": "always", "paths": ["ci-report/"], "expire_in": "30 days"},
        },
    }


def _blocks(value: Any) -> Any:
    """Multi-line strings as YAML literal blocks (`|`), as people write scripts."""
    from ruamel.yaml.scalarstring import LiteralScalarString

    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value


def dump(doc: dict[str, Any]) -> str:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width = 4096  # one command, one line: folding a shell line is legal but unreadable
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(_blocks(doc), buf)
    return "# Written by `mlops-nb ci init`. Its logic is `mlops-nb ci run`, which runs the same" \
           " locally.\n" + buf.getvalue()


def init(root: Path, github_: bool, gitlab_: bool, setup: str | None = None,
         force: bool = False) -> list[str]:
    """Write the chosen workflow files; returns their project-relative paths."""
    if not (github_ or gitlab_):
        raise UsageError("say which CI service: --github, --gitlab or both")
    if setup is not None and (not setup.strip() or "\x00" in setup):
        raise UsageError("--setup must be a non-empty shell command")
    command = setup if setup is not None else default_setup(root)
    wanted = ([(GITHUB, github(command))] if github_ else []) + \
        ([(GITLAB, gitlab(command))] if gitlab_ else [])
    for rel, _ in wanted:
        atomic.refuse_symlinks(root / rel, root=root)
        if (root / rel).exists() and not force:
            raise UsageError(f"{rel} exists; nothing was written (--force replaces it)")
    for rel, doc in wanted:
        atomic.write_text(root / rel, dump(doc), root=root)
    return [rel for rel, _ in wanted]
