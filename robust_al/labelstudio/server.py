"""Run an open-source Label Studio server on 127.0.0.1, from its own virtualenv.

Label Studio pins Django, pytz, redis and an older numpy stack, so it never goes into the project's
environment: :func:`install` builds a separate virtualenv (``~/.cache/robust-al/labelstudio-venv`` or
``$ROBUST_AL_LS_VENV``) and :class:`LabelStudioServer` runs its ``label-studio`` executable as a child process
with a clean, loopback-only environment.

A fresh data directory costs ~40 s of Django migrations. The first start therefore builds a migrated
*template* data directory (``~/.cache/robust-al/labelstudio-template`` or ``$ROBUST_AL_LS_TEMPLATE``) with a
placeholder admin and no project; every new data directory is a copy of it in which the admin's e-mail,
password hash, API token and the organization's invite token are rewritten, so later starts take seconds and
no two data directories share a secret.
"""
from __future__ import annotations

import atexit
import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import venv
import weakref
from collections.abc import Callable
from pathlib import Path

from robust_al.config import ConfigError
from robust_al.store.labelstudio import set_server_admin

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robust-al"
DEFAULT_VENV = CACHE / "labelstudio-venv"
DEFAULT_TEMPLATE = CACHE / "labelstudio-template"
LS_REQUIREMENT = os.environ.get("ROBUST_AL_LS_REQUIREMENT", "label-studio>=1.23,<1.24")
DEFAULT_USERNAME = "admin@robust-al.local"
DB_NAME = "label_studio.sqlite3"
TOKEN_FILE = "admin_token"
PASSWORD_FILE = "admin_password"
LOG_FILE = "server.log"
FILES_ROOT_FILE = "files_root"  # the local-files document root a data directory is served with (kept for restarts)
PORT_FILE = "port"  # the port a data directory is served on (kept for restarts: the campaign's URL stays valid)
PROGRESS_SECONDS = 10.0  # a progress line at most this often while a start or an install takes long

# unprefixed variables Label Studio (Django settings, its CLI) would read from the parent environment
REMOVED_ENV = ("HOST", "PORT", "USERNAME", "PASSWORD", "DEBUG", "CI")


_RUNNING: weakref.WeakSet[LabelStudioServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Servers still running when the interpreter exits are stopped (never left orphaned)."""
    for srv in list(_RUNNING):
        srv.stop()


class LabelStudioError(RuntimeError):
    """The Label Studio server could not be installed, started or reached."""


class _PortTaken(LabelStudioError):
    """Our port was taken between choosing it and the server binding it (the server then moves on)."""


class LabelStudioUnreachable(LabelStudioError, ConfigError):
    """Nothing answers at a campaign's Label Studio URL (a one-line error: what to do, no traceback)."""


def unreachable_message(url: str, run_dir: str | Path | None = None) -> str:
    """The one line saying that nothing answers at ``url`` and what to do about it."""
    here = run_dir is not None and (Path(run_dir) / "labelstudio").is_dir()
    serve = f"robust-al labelstudio serve {run_dir if here else 'DIR'}"
    return (f"Label Studio at {url.rstrip('/')} is unreachable: start it ({serve}) or pass --url / "
            f"--set annotators.labelstudio.url=...")


def check_reachable(url: str, run_dir: str | Path | None = None, timeout: float = 10.0) -> None:
    """Raise :class:`LabelStudioUnreachable` unless an HTTP server answers at ``url`` (any status counts:
    a refused token is a different, later error)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError):
        raise LabelStudioUnreachable(unreachable_message(url, run_dir)) from None


def default_venv_dir() -> Path:
    return Path(os.environ.get("ROBUST_AL_LS_VENV") or DEFAULT_VENV).expanduser()


def default_template_dir() -> Path:
    return Path(os.environ.get("ROBUST_AL_LS_TEMPLATE") or DEFAULT_TEMPLATE).expanduser()


def executable(venv_path: Path | None = None) -> Path:
    """Where ``label-studio`` lives (or would live) in its own virtualenv."""
    return Path(venv_path or default_venv_dir()) / "bin" / "label-studio"


def installed(venv_path: Path | None = None) -> bool:
    return executable(venv_path).exists()


def install(venv_dir: Path | None = None, requirement: str = LS_REQUIREMENT, quiet: bool = True,
            progress: Callable[[str], None] | None = None) -> Path:
    """Create a separate virtualenv and ``pip install label-studio`` into it; returns the executable.

    Idempotent: nothing is done when ``venv_dir/bin/label-studio`` already exists (~1 GB; 1 min on an idle
    machine with a fast network, 5-7 min measured on a loaded 2-core one). ``progress`` receives one line per
    step and, during a long step, one every 30 s with the elapsed seconds.
    """
    say = progress or (lambda line: None)
    vdir = Path(venv_dir or default_venv_dir()).expanduser()
    exe = executable(vdir)
    if exe.exists():
        return exe
    vdir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(vdir.parent / (vdir.name + ".lock")):
        if exe.exists():  # another process installed it while we waited
            return exe
        if vdir.exists():  # a half-built venv from an interrupted install
            shutil.rmtree(vdir)
        t0 = time.monotonic()
        with _Ticker(say, t0, 30.0):
            say(f"[1/3] creating the virtualenv {vdir} ...")
            venv.EnvBuilder(with_pip=True, clear=True).create(vdir)
            pip = [str(vdir / "bin" / "python"), "-m", "pip"]
            flags = ["-q"] if quiet else []
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_USER")}
            try:
                say(f"[2/3] upgrading pip ({time.monotonic() - t0:.0f} s elapsed) ...")
                subprocess.run([*pip, "install", *flags, "--upgrade", "pip"], check=True, env=env)
                say(f"[3/3] pip install {requirement} (~1 GB; {time.monotonic() - t0:.0f} s elapsed) ...")
                subprocess.run([*pip, "install", *flags, requirement], check=True, env=env)
            except subprocess.CalledProcessError as e:
                raise LabelStudioError(f"installing {requirement} into {vdir} failed: {e}") from e
        say(f"installed in {time.monotonic() - t0:.0f} s")
        if not exe.exists():
            raise LabelStudioError(f"{requirement} installed into {vdir} but {exe} is missing")
    return exe


class _Ticker:
    """While in the ``with`` block, ``say`` an elapsed-seconds line every ``every`` seconds (a thread)."""

    def __init__(self, say: Callable[[str], None], t0: float, every: float, what: str = "still working"):
        self.say, self.t0, self.every, self.what = say, t0, every, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.say(f"  ... {self.what}: {time.monotonic() - self.t0:.0f} s elapsed")

    def __enter__(self) -> _Ticker:
        self._thread = threading.Thread(target=self._run, daemon=True, name="robust-al-progress")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _locked:
    """An exclusive advisory lock on ``path`` (one template build / install at a time across processes)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the server does: connections of a previous run lingering in TIME_WAIT must not count as "in use"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
            return True
        except OSError:
            return False


def _die_with_parent():
    """A ``preexec_fn`` asking Linux to SIGTERM the server when the process that started it dies.

    Only from a single-threaded process (a ``preexec_fn`` is not safe alongside other threads, and the
    signal fires when the *thread* that forked exits); otherwise ``stop()`` / ``atexit`` must do it.
    """
    if (not sys.platform.startswith("linux") or threading.active_count() != 1
            or threading.current_thread() is not threading.main_thread()):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def django_password_hash(password: str, iterations: int = 1_000_000) -> str:
    """A Django ``pbkdf2_sha256`` password hash (what ``make_password`` stores), computed without Django."""
    salt = secrets.token_urlsafe(16)[:22]
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(dk).decode()}"


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


def _read_secret(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _http_json(url: str, token: str, timeout: float = 2.0) -> tuple[int, object]:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


class LabelStudioServer:
    """One Label Studio process serving one data directory on 127.0.0.1.

    >>> with LabelStudioServer().start(run_dir / "labelstudio") as ls:
    ...     print(ls.url, ls.token_file)
    """

    def __init__(self, exe: str | Path | None = None, template: str | Path | None = None,
                 use_template: bool = True, progress: Callable[[str], None] | None = None):
        self.exe = Path(exe) if exe else executable()
        self.template = Path(template) if template else default_template_dir()
        self.use_template = use_template
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.port: int | None = None
        self.token: str | None = None
        self.username: str | None = None
        self.data_dir: Path | None = None
        self.files_root: Path | None = None
        self.startup_seconds: float | None = None
        self.progress = progress  # receives a line per start-up step and, while waiting, one every ~10 s

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def token_file(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, data_dir: str | Path, port: int | None = None, username: str | None = None,
              password: str | None = None, token: str | None = None, timeout: float | None = None,
              files_root: str | Path | None = None) -> LabelStudioServer:
        """Start serving ``data_dir`` (created from the template when new); returns self once it answers.

        ``files_root``: serve files under this folder to logged-in members of projects that have a local-files
        storage covering them (``/data/local-files/?d=<path relative to files_root>``; Label Studio's
        ``LOCAL_FILES_SERVING_ENABLED`` / ``LOCAL_FILES_DOCUMENT_ROOT``). It is remembered in ``data_dir`` so
        that a restart serves the same root; without it, no local files are served.

        On an existing data directory the admin, password and token stored there are kept (``username``,
        ``password`` and ``token`` must then be left out or match); on a new one they are set from the
        arguments, a random password/token being generated when not given and written, mode 0600, to
        ``data_dir/admin_password`` and ``data_dir/admin_token``.
        """
        if self.proc is not None:
            raise LabelStudioError("server already running")
        if not self.exe.exists():
            raise LabelStudioError(
                f"label-studio is not installed at {self.exe}: run `robust-al labelstudio install` "
                "(or robust_al.labelstudio.server.install())")
        data_dir = Path(data_dir).expanduser().resolve()
        stored_port = self.stored_port(data_dir)
        if port is not None and not _port_free(port):
            raise LabelStudioError(f"port {port} on 127.0.0.1 is already in use: choose another with --port")
        if port is None and stored_port is not None:
            if not _port_free(stored_port):  # never move silently: the campaign's URL names this port
                raise LabelStudioError(
                    f"port {stored_port} (where {data_dir} was served before) is in use by another process: stop "
                    f"it, or serve on another port with --port N (then resume the campaign with --set "
                    f"annotators.labelstudio.url=http://127.0.0.1:N)")
            port = stored_port
        self.data_dir = data_dir
        fresh = not (data_dir / DB_NAME).exists()
        if fresh:
            username = username or DEFAULT_USERNAME
            password = password or secrets.token_urlsafe(18)
            token = token or secrets.token_hex(20)
            if len(token) <= 5:
                raise ValueError("Label Studio needs a token longer than 5 characters")
            data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(data_dir, 0o700)  # its database holds every user's API token
            if self.use_template:
                self._ensure_template()
                self._copy_template(data_dir, username, password, token)
            _write_secret(self.token_file, token)
            _write_secret(self.password_file, password)
            (data_dir / "admin_username").write_text(username + "\n")
        else:
            stored = _read_secret(self.token_file)
            if token and stored and token != stored:
                raise LabelStudioError(f"{data_dir} already has an admin token; it differs from the one given")
            token = token or stored
            if not token:
                raise LabelStudioError(f"{data_dir} has a database but no {TOKEN_FILE}: pass token=")
            password = password or _read_secret(self.password_file) or ""
            username = username or _read_secret(data_dir / "admin_username") or DEFAULT_USERNAME
        self.token, self.username = token, username
        self.files_root = self._files_root(data_dir, files_root)
        if timeout is None:
            timeout = 300.0 if (fresh and not self.use_template) else 120.0
        self._launch(data_dir, port, username, password, token, timeout)
        (data_dir / PORT_FILE).write_text(f"{self.port}\n")  # the next start serves the same URL
        return self

    @staticmethod
    def stored_port(data_dir: str | Path) -> int | None:
        """The port ``data_dir`` was last served on (None: never served, or served before ports were kept)."""
        f = Path(data_dir) / PORT_FILE
        try:
            return int(f.read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _files_root(data_dir: Path, files_root: str | Path | None) -> Path | None:
        """The local-files root to serve: the one given (then remembered) or the one remembered."""
        remembered = data_dir / FILES_ROOT_FILE
        if files_root is None:
            text = remembered.read_text().strip() if remembered.exists() else ""
            return Path(text) if text else None
        root = Path(files_root).expanduser().resolve()
        if not root.is_dir():
            raise LabelStudioError(f"--files-root {root} is not a directory")
        remembered.write_text(f"{root}\n")
        return root

    def _env(self, data_dir: Path, port: int, username: str, password: str, token: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in REMOVED_ENV and not k.startswith(("LABEL_STUDIO_", "DJANGO_"))
               and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
            "PATH": f"{self.exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        if self.files_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.files_root)
        return env

    def _launch(self, data_dir: Path, port: int | None, username: str, password: str, token: str,
                timeout: float) -> None:
        for attempt in range(3):
            try:
                return self._launch_once(data_dir, port or free_port(), username, password, token, timeout)
            except _PortTaken:
                if port is not None or attempt == 2:  # a chosen port, or bad luck three times
                    raise

    def _launch_once(self, data_dir: Path, port: int, username: str, password: str, token: str,
                     timeout: float) -> None:
        if not _port_free(port):
            raise _PortTaken(f"port {port} on 127.0.0.1 is already in use")
        cmd = [str(self.exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
        with open(self.log_file, "ab") as log:  # the server writes to its own copy of the descriptor
            self._log_offset = log.tell()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(cmd, env=self._env(data_dir, port, username, password, token),
                                         cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent())
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        _RUNNING.add(self)
        try:
            with _Ticker(self._progress_line, t0, PROGRESS_SECONDS, "starting"):
                self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        moved = re.compile(rb"https?://127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabelStudioError(
                    f"label-studio exited with code {self.proc.returncode} before answering\n{self.log_tail()}")
            status, body = _http_json(f"{self.url}/api/current-user/whoami", self.token)
            if status == 200 and isinstance(body, dict):
                if body.get("email") != self.username and body.get("username") != self.username:
                    raise LabelStudioError(f"{self.url} answers as another server ({body.get('email')!r})")
                return
            if status in (401, 403):
                raise LabelStudioError(f"{self.url} refused the admin token (HTTP {status})\n{self.log_tail()}")
            # the dev server silently takes the next port when ours was grabbed in the meantime
            try:
                with open(self.log_file, "rb") as f:
                    f.seek(self._log_offset)
                    ports = {int(m) for m in moved.findall(f.read())}
            except OSError:
                ports = set()
            if ports and self.port not in ports:
                raise _PortTaken(f"label-studio moved to port(s) {sorted(ports)} instead of {self.port}")
            time.sleep(0.25)
        raise LabelStudioError(f"label-studio did not answer on {self.url} within {timeout:.0f} s\n"
                               f"{self.log_tail()}")

    def _progress_line(self, line: str) -> None:
        """A waiting line, with the server log's last line (which migration, ...) as the step."""
        if self.progress is None:
            return
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(self._log_offset, f.seek(0, 2) - 4096))
                last = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            last = []
        step = last[-1].strip()[:100] if last else ""
        if self.token:
            step = step.replace(self.token, "<token>")
        self.progress(f"{line}" + (f" | {step}" if step else ""))

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "(no server log)"
        text = "\n".join(lines)
        if self.token:
            text = text.replace(self.token, "<token>")
        return f"--- last lines of {self.log_file} ---\n{text}"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server and wait for it (SIGKILL after ``timeout`` seconds)."""
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the runserver process and any child
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout: float = 120.0) -> LabelStudioServer:
        """Stop, then serve the same data directory again (on the same port: its URL stays valid)."""
        data_dir, token, username = self.data_dir, self.token, self.username
        self.stop()
        return self.start(data_dir, username=username, token=token, timeout=timeout)  # files_root: remembered

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> LabelStudioServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- template ---------------------------------------------------------------------------------------
    def _ensure_template(self) -> None:
        """Build the migrated template data directory once (a real first start), under a lock."""
        if (self.template / ".ready").exists():
            return
        with _locked(self.template.parent / (self.template.name + ".lock")):
            if (self.template / ".ready").exists():
                return
            build = self.template.with_name(self.template.name + f".build-{os.getpid()}")
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir(parents=True)
            if self.progress is not None:
                self.progress("first start ever: building a migrated template data directory (Django migrations: "
                              "40-60 s on an idle 2-core machine, up to ~3 min on a loaded one; later starts: ~5 s)")
            boot = LabelStudioServer(self.exe, use_template=False, progress=self.progress)
            boot.start(build, username=DEFAULT_USERNAME)  # migrations: ~40 s on 2 cores
            boot.stop()
            for name in (TOKEN_FILE, PASSWORD_FILE, "admin_username", LOG_FILE, PORT_FILE):
                (build / name).unlink(missing_ok=True)
            (build / ".ready").write_text(json.dumps({"created": time.time(), "exe": str(self.exe)}))
            shutil.rmtree(self.template, ignore_errors=True)
            build.rename(self.template)

    def _copy_template(self, data_dir: Path, username: str, password: str, token: str) -> None:
        for src in self.template.iterdir():
            if src.name in (".ready", PORT_FILE):
                continue
            dst = data_dir / src.name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)
        set_server_admin(data_dir / DB_NAME, DEFAULT_USERNAME, username, django_password_hash(password), token,
                         secrets.token_hex(20))
        # Django's SECRET_KEY (signs sessions and CSRF tokens): one per data directory, not per template
        env_file = data_dir / ".env"
        lines = [ln for ln in (env_file.read_text().splitlines() if env_file.exists() else [])
                 if not ln.startswith("SECRET_KEY=")]
        _write_secret(env_file, "\n".join([*lines, f"SECRET_KEY={secrets.token_urlsafe(50)}"]))


def main_serve(run_dir: str | Path, port: int | None = None, files_root: str | Path | None = None) -> int:
    """``robust-al labelstudio serve RUN_DIR [--files-root DIR]``: serve ``RUN_DIR/labelstudio`` until Ctrl-C."""
    data_dir = Path(run_dir) / "labelstudio"
    t0 = time.monotonic()
    srv = LabelStudioServer(progress=lambda line: print(line, flush=True))

    def on_term(signum, frame):  # `kill` of this process: stop the server like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    stored = LabelStudioServer.stored_port(data_dir)
    fresh = not (data_dir / DB_NAME).exists()
    print(f"starting Label Studio for {data_dir} "
          + ("(new data directory: ~5 s from the migrated template; the first start ever builds that template "
             "first, 40 s to ~3 min)" if fresh else
             f"(existing data directory, {'port ' + str(stored) if stored and port is None else 'port given'}: "
             "~5-15 s)") + " ...", flush=True)
    try:
        srv.start(data_dir, port=port, files_root=files_root)
    except LabelStudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Label Studio: {srv.url} (up in {time.monotonic() - t0:.0f} s; the port is kept for the next start)")
    print(f"  admin user: {srv.username}\n  password file: {srv.password_file}\n"
          f"  API token file: {srv.token_file}\n  server log: {srv.log_file}\n"
          f"  local files served from: {srv.files_root or '(none: start with --files-root DIR)'}\n"
          "Ctrl-C to stop.", flush=True)
    try:
        while srv.running:
            time.sleep(0.5)
        print(f"Label Studio exited unexpectedly\n{srv.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Label Studio ...", flush=True)
        return 0
    finally:
        srv.stop()


def main_install() -> int:
    """``robust-al labelstudio install``: build the separate virtualenv (idempotent)."""
    if installed():
        print(f"label-studio: {executable()} (already installed)")
        return 0
    print("installing Label Studio into its own virtualenv: ~1 GB; 1-2 min on an idle machine with a fast "
          "network, 5-7 min measured on a loaded 2-core one", flush=True)
    try:
        exe = install(quiet=True, progress=lambda line: print(line, flush=True))
    except LabelStudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"label-studio: {exe}")
    return 0
