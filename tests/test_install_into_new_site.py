"""The install guide works as written, in a new ``django-admin startproject`` site.

The wheel is built and installed into a fresh virtualenv with its own dependencies only (no
Redis client, nothing from this repository on the path) and the Django release this run tests
(each nox session proves the guide on its own Django). Two new sites — Django's user model,
and a user model that logs in by email and has no ``username`` — get the README's snippets
pasted in exactly as written (read from README.md, so the guide is what is tested), then:
``check`` is clean, ``migrate`` runs, events are recorded (``track``, ``track_many``, the ingest
endpoint) and a destination saved (admin, page) with the broker missing (the guide without
``Q_CLUSTER``: ``check`` reports E013), with a Redis broker refusing connections, and with the
guide's database broker; ``capi_dispatch`` delivers them all to a sandbox started from the site
(``capi_sandbox``), and every page of the app renders for a superuser and a member. One of the
sites shows the pages in its own layout through the README's example template.

One virtualenv per test session serves both sites; pip's cache makes a rerun quick.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE_STEPS = Path(__file__).resolve().parent / "new_site" / "site_steps.py"
INSTALL_SECTION = "## For developers: installing into an existing site"
DJANGO_UNDER_TEST = f"Django=={django.get_version()}"

# The site's own setup before it follows the guide: a user model that logs in by email.
EMAIL_USER_MODELS = """
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models


class UserManager(BaseUserManager):
    def create_user(self, email, password=None, **fields):
        user = self.model(email=self.normalize_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **fields):
        return self.create_user(email, password, is_staff=True, is_superuser=True, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("email address", unique=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    objects = UserManager()
"""

# The settings the steps run under: the guide's settings, pointed at the sandbox as
# `capi_sandbox` says; CAPI_BROKER=missing leaves Q_CLUSTER out, as the old guide did.
STEP_SETTINGS = """
import os

from mysite.settings import *  # noqa: F403  (the guide's settings, unchanged)

CAPI_DESTINATIONS = {"GRAPH_API_BASE_URL": os.environ["CAPI_SANDBOX_URL"]}
if os.environ.get("CAPI_BROKER") == "missing":
    del Q_CLUSTER  # noqa: F821
if os.environ.get("CAPI_BROKER") == "redis_down":
    Q_CLUSTER = {"name": "capi", "redis": os.environ["CAPI_REDIS_URL"], "timeout": 60, "retry": 120}
"""


# A host site's own layout, with the block names the README's layout example fills.
SITE_LAYOUT = """<!doctype html>
<html><head><title>{% block title %}My site{% endblock %}</title>
{% block head %}{% endblock %}</head>
<body><nav data-testid="site-layout">My site</nav>{% block main %}{% endblock %}</body></html>
"""


def install_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split(INSTALL_SECTION, 1)[1].split("\n## ", 1)[0]


def readme_layout_example() -> str:
    """The install section's example of ``capi_destinations/base.html`` in the site's layout."""
    blocks = re.findall(r"\n( *)```django\n(.*?)\n *```", install_section(), flags=re.DOTALL)
    (example,) = [
        textwrap.dedent(indent + text)
        for indent, text in blocks
        if "capi_destinations/capi_destinations.css" in text
    ]
    return example


def readme_snippets() -> dict[str, str]:
    """The install section's code blocks that start with ``# settings.py`` / ``# urls.py``."""
    section = install_section()
    snippets = {}
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL):
        first_line = block.splitlines()[0].strip()
        if first_line in ("# settings.py", "# urls.py"):
            snippets[first_line[2:]] = block
    assert set(snippets) == {"settings.py", "urls.py"}, "the guide lost a snippet"
    return snippets


@dataclass(frozen=True)
class Virtualenv:
    python: Path

    @property
    def django_admin(self) -> Path:
        return self.python.parent / "django-admin"


def clean_environment(**extra: str) -> dict[str, str]:
    """This test run's environment without what would make the site see this repository."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL")
    }
    environment.update(extra)
    return environment


def shown(command: list[str | Path]) -> str:
    """The command for a failure message, without the step script passed as an argument."""
    return " ".join(str(part) if len(str(part)) < 200 else "<script>" for part in command)


def run(command: list[str | Path], cwd: Path, **environment: str) -> str:
    finished = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_environment(**environment),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, f"{shown(command)}\n{finished.stdout}\n{finished.stderr}"
    return finished.stdout + finished.stderr


@pytest.fixture(scope="session")
def fresh_virtualenv(tmp_path_factory: pytest.TempPathFactory) -> Virtualenv:
    """The wheel, built from this checkout, installed with its own dependencies only."""
    folder = tmp_path_factory.mktemp("install")
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", folder, ROOT],
        cwd=ROOT,
    )
    (wheel,) = folder.glob("django_capi_destinations-*.whl")
    venv.EnvBuilder(with_pip=True).create(folder / "venv")
    python = folder / "venv" / "bin" / "python"
    cache = Path.home() / ".cache" / "capi-destinations-install-test"
    # The Django this run tests (nox's session for each supported version), not just the newest
    # release pip would pick for this Python.
    run(
        [python, "-m", "pip", "install", "--quiet", "--cache-dir", cache, wheel, DJANGO_UNDER_TEST],
        cwd=folder,
    )
    installed = run([python, "-m", "django", "--version"], cwd=folder).strip()
    assert installed == django.get_version(), installed
    return Virtualenv(python)


@pytest.fixture(scope="session")
def redis_client(fresh_virtualenv: Virtualenv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Redis client in a folder of its own, put on PYTHONPATH only where a step needs it:
    the virtualenv stays as the wheel left it (no Redis client)."""
    folder = tmp_path_factory.mktemp("redis-client")
    cache = Path.home() / ".cache" / "capi-destinations-install-test"
    run(
        [
            fresh_virtualenv.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--cache-dir",
            cache,
            "--target",
            folder,
            "redis",
        ],
        cwd=folder,
    )
    return folder


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Site:
    """A new site made by ``django-admin startproject mysite``."""

    folder: Path
    python: Path

    def manage(self, *arguments: str, settings: str = "mysite.settings", **env: str) -> str:
        return run(
            [self.python, "manage.py", *arguments],
            cwd=self.folder,
            DJANGO_SETTINGS_MODULE=settings,
            **env,
        )

    def manage_fails(self, *arguments: str, **env: str) -> str:
        finished = subprocess.run(
            [str(self.python), "manage.py", *arguments],
            cwd=self.folder,
            env=clean_environment(**env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert finished.returncode != 0, finished.stdout + finished.stderr
        return finished.stdout + finished.stderr

    def step(self, name: str, sandbox_url: str, **env: str) -> dict[str, Any]:
        output = self.manage(
            "shell",
            "-c",
            SITE_STEPS.read_text(encoding="utf-8"),
            settings="mysite.step_settings",
            CAPI_SITE_STEP=name,
            CAPI_SANDBOX_URL=sandbox_url,
            **env,
        )
        (line,) = [line for line in output.splitlines() if line.startswith("RESULT ")]
        return {**json.loads(line.removeprefix("RESULT ")), "output": output}


def new_site(folder: Path, environment: Virtualenv, *, email_login: bool) -> Site:
    folder.mkdir()
    run([environment.django_admin, "startproject", "mysite", "."], cwd=folder)
    site = Site(folder, environment.python)
    settings_file = folder / "mysite" / "settings.py"
    if email_login:
        (folder / "accounts").mkdir()
        (folder / "accounts" / "__init__.py").write_text("")
        (folder / "accounts" / "models.py").write_text(EMAIL_USER_MODELS)
        with settings_file.open("a") as settings:
            settings.write('\nINSTALLED_APPS += ["accounts"]\nAUTH_USER_MODEL = "accounts.User"\n')
        site.manage("makemigrations", "accounts")
    snippets = readme_snippets()
    with settings_file.open("a") as settings:
        settings.write("\n" + snippets["settings.py"])
    with (folder / "mysite" / "urls.py").open("a") as urls:
        urls.write("\n" + snippets["urls.py"])
    (folder / "mysite" / "step_settings.py").write_text(STEP_SETTINGS)
    return site


def use_site_layout(site: Site) -> None:
    """Wrap the app's pages in the site's layout, as the README's example does."""
    templates = site.folder / "templates"
    (templates / "capi_destinations").mkdir(parents=True)
    (templates / "site_base.html").write_text(SITE_LAYOUT)
    (templates / "capi_destinations" / "base.html").write_text(readme_layout_example())
    with (site.folder / "mysite" / "settings.py").open("a") as settings:
        settings.write('\nTEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]\n')


@pytest.fixture
def sandbox_of(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start ``manage.py capi_sandbox`` from a site; returns its URL; stopped after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(site: Site) -> str:
        process = subprocess.Popen(
            [str(site.python), "manage.py", "capi_sandbox", "--port", "0"],
            cwd=site.folder,
            env=clean_environment(DJANGO_SETTINGS_MODULE="mysite.settings"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert " listening on " in first_line, first_line + process.stderr.read()
        url = first_line.split(" listening on ")[1].split()[0]
        # It names the setting a host site reads.
        assert f'"GRAPH_API_BASE_URL": "{url}"' in process.stdout.readline()
        return url

    yield start
    for process in processes:
        process.terminate()
        process.communicate(timeout=10)


@pytest.mark.parametrize("email_login", [False, True], ids=["default_user", "email_login_user"])
def test_the_install_guide_works_in_a_new_site(
    fresh_virtualenv: Virtualenv,
    redis_client: Path,
    sandbox_of: Any,
    tmp_path: Path,
    email_login: bool,
) -> None:
    site = new_site(tmp_path / "site", fresh_virtualenv, email_login=email_login)
    if email_login:  # one of the two sites shows the pages in its own layout
        use_site_layout(site)

    assert "no issues" in site.manage("check", "--fail-level", "WARNING")
    site.manage("migrate", "--noinput")
    sandbox_url = sandbox_of(site)

    # The old guide, without Q_CLUSTER: check says what is missing, recording still works.
    missing = site.manage_fails(
        "check",
        DJANGO_SETTINGS_MODULE="mysite.step_settings",
        CAPI_SANDBOX_URL=sandbox_url,
        CAPI_BROKER="missing",
    )
    assert "capi_destinations.E013" in missing
    assert '"orm": "default"' in missing
    assert site.step("broken_broker", sandbox_url, CAPI_BROKER="missing")["pending"] == 3
    # A Redis broker that refuses connections.
    redis_down = site.step(
        "broken_broker",
        sandbox_url,
        CAPI_BROKER="redis_down",
        CAPI_REDIS_URL=f"redis://:broker-password@127.0.0.1:{closed_loopback_port()}/0",
        PYTHONPATH=str(redis_client),
    )
    assert redis_down["pending"] == 3
    assert "Could not queue the dispatch of destination" in redis_down["output"]
    assert "Connection refused" in redis_down["output"]
    assert "broker-password" not in redis_down["output"]

    # The guide's database broker: recording queues a dispatch; capi_dispatch sends them all.
    delivery = site.step("orm_broker", sandbox_url)
    assert delivery["queued_tasks"] == 1
    sent = sorted(
        [f"{broker}-{n}" for broker in ("missing", "redis_down") for n in (1, 2, 3)]
        + ["orm-broker-1"]
    )
    assert delivery["received"] == sent, delivery["dispatch_output"]
    assert delivery["delivered"] == len(sent)

    pages = site.step("pages", sandbox_url)
    for name in ("overview", "destination", "event_log", "event_detail", "event", "members"):
        assert pages["statuses"][name] == {"superuser": 200, "member": 200}, name
    for name in ("import_upload", "import_run", "import_rejected_csv"):
        assert pages["statuses"][name]["superuser"] == 200, name
    assert pages["in_site_layout"] == email_login
    assert pages["login_field_label"] == ("Email address" if email_login else "Username")
    expected_name = "member@example.com" if email_login else "member"
    assert pages["redelivery_reason"] == f"Redelivery requested by {expected_name}."
    # An invitation by email creates the account with the site's user model: where the login is
    # the email, only a password is asked for.
    assert pages["invited_login"] == "invitee@example.com"
    assert pages["invited_role"] == "editor"
    assert pages["invite_asks_for_login_name"] == (not email_login)
