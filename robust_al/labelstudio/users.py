"""Annotator accounts on an open-source Label Studio server, and annotating as one of them.

``POST /api/users`` ignores passwords and no API hands out another user's token, so an annotator is made the
way a person joins: the admin's invite link (``GET /api/invite``), the sign-up form on a browser-like session
(CSRF cookie + ``csrfmiddlewaretoken``), then ``GET /api/current-user/token`` on that logged-in session.
"""
from __future__ import annotations

from typing import Any

import httpx

from robust_al.labelstudio.client import choice_result


class SignupError(RuntimeError):
    """The invite-link sign-up did not create (and log in) the user."""


def _url_token(server: Any) -> tuple[str, str]:
    """(url, admin token) of a LabelStudioServer, a LabelStudioClient or a ``(url, token)`` pair."""
    if isinstance(server, (tuple, list)):
        return str(server[0]).rstrip("/"), str(server[1])
    return str(server.url).rstrip("/"), str(server.token)


def invite_url(server: Any) -> str:
    """The organization's sign-up link (absolute), as the admin sees it under Organization > Invite."""
    url, token = _url_token(server)
    r = httpx.get(f"{url}/api/invite", headers={"Authorization": f"Token {token}"}, timeout=30)
    r.raise_for_status()
    link = r.json()["invite_url"]
    return link if link.startswith("http") else url + link


def create_annotator(server: Any, email: str, password: str, timeout: float = 60.0) -> tuple[int, str]:
    """Sign ``email`` up through the invite link; returns ``(user_id, api_token)`` of the new user.

    ``server``: a running LabelStudioServer, a LabelStudioClient or ``(url, admin_token)``. Label Studio
    wants a password of at least 8 characters. An e-mail already taken raises :class:`SignupError`.
    """
    url, _ = _url_token(server)
    link = invite_url(server)
    path = link[len(url):] if link.startswith(url) else link
    if path.startswith("/user/signup?"):  # the form posts back to the same view; keep its trailing slash
        path = "/user/signup/?" + path.split("?", 1)[1]
    return _through_form(url, path, {"email": email, "password": password, "allow_newsletters": "false"},
                         f"sign-up of {email}", timeout)


def log_in(server: Any, email: str, password: str, timeout: float = 60.0) -> tuple[int, str]:
    """Log an existing user in through the login form; returns ``(user_id, api_token)``. Raises
    :class:`SignupError` when the server refuses (wrong password, unknown e-mail)."""
    url, _ = _url_token(server)
    return _through_form(url, "/user/login/", {"email": email, "password": password}, f"log-in of {email}",
                         timeout)


def _through_form(url: str, path: str, data: dict, what: str, timeout: float) -> tuple[int, str]:
    """Post one of Label Studio's account forms (its CSRF token first) as a browser does, then read the session's
    API token: ``(user_id, api_token)``; :class:`SignupError` naming ``what`` when the server refuses."""
    with httpx.Client(base_url=url, timeout=timeout, follow_redirects=False) as s:
        r = s.get(path)
        if r.status_code != 200:
            raise SignupError(f"GET {path}: HTTP {r.status_code}")
        csrf = s.cookies.get("csrftoken")
        if not csrf:
            raise SignupError(f"{path} set no csrftoken cookie")
        r = s.post(path, data={**data, "csrfmiddlewaretoken": csrf}, headers={"Referer": url + path,
                                                                              "X-CSRFToken": csrf})
        if r.status_code != 302:
            raise SignupError(f"{what} refused (HTTP {r.status_code}): {_form_errors(r.text)}")
        r = s.get("/api/current-user/token")
        if r.status_code != 200:
            raise SignupError(f"no API token after the {what} (HTTP {r.status_code})")
        token = r.json()["token"]
    me = httpx.get(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}, timeout=timeout)
    me.raise_for_status()
    return int(me.json()["id"]), token


def _form_errors(html: str) -> str:
    import re

    errs = re.findall(r'class="[^"]*(?:error|field_errors)[^"]*"[^>]*>\s*(?:<[^>]+>\s*)*([^<]+)', html)
    errs = [e.strip() for e in errs if e.strip()]
    return "; ".join(errs[:5]) or "(no error message found in the form)"


def annotate(server_url: str, token: str, task_id: int, label_name: str | None, cancelled: bool = False,
             lead_time: float | None = None, client: httpx.Client | None = None) -> dict:
    """Post an annotation choosing ``label_name`` on ``task_id`` as the user owning ``token``.

    ``cancelled=True`` (or ``label_name=None``) records a skip, as the UI's Skip button does. Returns the
    created annotation (``id``, ``completed_by``, ``updated_at``, ...).
    """
    body: dict[str, Any] = {"result": [] if (cancelled or label_name is None) else choice_result(label_name),
                            "was_cancelled": bool(cancelled or label_name is None)}
    if lead_time is not None:
        body["lead_time"] = float(lead_time)
    path = f"/api/tasks/{int(task_id)}/annotations/"
    headers = {"Authorization": f"Token {token}"}
    if client is not None:
        r = client.post(path, json=body, headers=headers)
    else:
        r = httpx.post(server_url.rstrip("/") + path, json=body, headers=headers, timeout=60)
    r.raise_for_status()
    return r.json()
