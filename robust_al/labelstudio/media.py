"""What a Label Studio task shows of a pool item, and how the browser gets an image.

``annotators.labelstudio.media`` chooses how an image reaches the labeler's browser:

- ``data-url`` (default): the image bytes are embedded in the task (``data:image/png;base64,...``). Works with
  any server, local or remote, with nothing to configure; only the queried items are ever embedded. Images
  over :data:`MAX_DATA_URL_BYTES` are refused (they bloat every Data Manager page that lists the task):
  use ``local-files`` for those.
- ``local-files``: Label Studio serves the file from its own disk (``/data/local-files/?d=<path relative to
  the document root>``). The server must run on the machine holding the images, started with ``robust-al
  labelstudio serve RUN_DIR --files-root DIR`` where DIR is a strict ancestor of the pool's image folder, and
  the config must name the same DIR in ``annotators.labelstudio.files_root``. The campaign adds a local-files
  storage for the pool's folder to its project: Label Studio 1.23 serves a file only to members of a project
  with a local-files storage whose path contains the file's folder (``io_storages/localfiles/views.py``).
- ``url-template``: the images are already on a web server; ``media_url: "https://host/path/{key}"``
  makes each task's URL from the item's key.

**Nothing in a task tells the answer.** An image folder's item key (``airplane/0001.jpg``) names its class,
and every task data field is a Data Manager column a labeler sees (the key is also the labeling page's
header). So a task shows an opaque display key (:func:`opaque_key`: a salted hash of the key, stable per item)
unless ``annotators.labelstudio.show_keys`` is on, and a bare feature pool's text is that display key too.
With ``local-files`` the image's URL is a path under the server's files root (Label Studio serves files by
path), so the campaign serves each image through an opaque symbolic link (:func:`opaque_link`) in a folder of
its own under the files root (``robust-al-media/<opaque>/``, the folder its local-files storage grants), never
by its own path. What this cannot hide: with ``url-template`` the URL is made from the key (use ``data-url``,
the default, or ``local-files`` when the file names or folders tell the class).
"""
from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np

MAX_DATA_URL_BYTES = 256 * 1024  # per image; a CIFAR JPEG is ~1.5 kB, a phone photo several MB
MEDIA_MODES = ("data-url", "local-files", "url-template")


class MediaError(ValueError):
    """The pool's media cannot be shown the configured way (one line, naming the config key)."""


def data_url(path: str | Path, limit: int = MAX_DATA_URL_BYTES) -> str:
    """The image file as a ``data:`` URL."""
    p = Path(path)
    size = p.stat().st_size
    if size > limit:
        raise MediaError(f"annotators.labelstudio.media = data-url: {p} is {size // 1024} kB, over the "
                         f"{limit // 1024} kB limit for embedded images; use media: local-files")
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode()}"


def local_files_url(path: str | Path, files_root: str | Path, follow_links: bool = True) -> str:
    """``/data/local-files/?d=...`` for a file under the server's document root (``follow_links=False``: the
    path of a link itself, not of the file it points to)."""
    p = Path(path).resolve() if follow_links else Path(os.path.abspath(path))
    rel = p.relative_to(Path(files_root).resolve())
    return "/data/local-files/?d=" + quote(rel.as_posix())


def opaque_link(path: str | Path, links_dir: Path, name: str) -> Path:
    """A symbolic link ``links_dir/<name><suffix>`` to the image ``path`` (made once; Label Studio's local-files
    view opens it without resolving it, so the browser only ever sees the opaque name)."""
    target = Path(path).resolve()
    links_dir.mkdir(parents=True, exist_ok=True)
    link = links_dir / (str(name) + target.suffix.lower())
    if link.is_symlink() and Path(os.readlink(link)) != target:
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(target)
    return link


def template_url(template: str, key: str) -> str:
    return template.replace("{key}", quote(str(key)))


def opaque_key(salt: str, key: str, length: int = 12) -> str:
    """A short, stable stand-in for an item key that tells nothing about it without the salt (a plain hash of
    ``airplane/0001.jpg`` could be recomputed by anyone who guesses the folder layout)."""
    import hashlib
    import hmac

    return hmac.new(salt.encode(), str(key).encode(), hashlib.sha256).hexdigest()[:length]


def check_media(pool, mode: str, files_root: str | None = None, template: str | None = None) -> None:
    """Refuse, before anything is created, a media setting that cannot show this pool's images."""
    if pool.media_kind != "image":
        return
    if mode == "url-template":
        if not template or "{key}" not in template:
            raise MediaError("annotators.labelstudio.media_url must be a URL holding {key}, e.g. "
                             "https://host/images/{key}, when media = url-template")
        return
    paths = [Path(p) for p in pool.media if p is not None]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise MediaError(f"pool image {missing} does not exist")
    if mode == "data-url":
        big = next((p for p in paths if p.stat().st_size > MAX_DATA_URL_BYTES), None)
        if big is not None:
            data_url(big)  # raises the one-line error
    elif mode == "local-files":
        if not files_root:
            raise MediaError("annotators.labelstudio.files_root must name the folder the server was started with "
                             "(robust-al labelstudio serve RUN_DIR --files-root DIR) when media = local-files")
        root = Path(files_root).expanduser().resolve()
        media_root = Path(pool.media_root).resolve() if pool.media_root is not None else None
        if media_root is None or root not in media_root.parents:
            raise MediaError(f"annotators.labelstudio.files_root = {root}: the pool's images live in {media_root}, "
                             "which is not strictly inside it (Label Studio serves local files only from a "
                             "subfolder of its --files-root)")
        outside = next((p for p in paths if media_root not in p.resolve().parents), None)
        if outside is not None:
            raise MediaError(f"pool image {outside} is not under the pool's media_root {media_root}")
    else:
        raise MediaError(f"annotators.labelstudio.media = {mode!r}: expected one of {', '.join(MEDIA_MODES)}")


def task_fields(pool, item_id: int, mode: str, files_root: str | None = None,
                template: str | None = None, shown_key: str | None = None, links_dir: Path | None = None) -> dict:
    """``{"key": ..., "image": url}`` or ``{"key": ..., "text": ...}`` for one pool item; ``shown_key``: what
    the task calls the item (default: its key; a campaign passes an opaque one, see the module docstring);
    ``links_dir`` (local-files): serve the image through an opaque link there, named ``shown_key``."""
    pos = int(pool.positions([item_id])[0])
    key = str(pool.keys[pos])
    shown = key if shown_key is None else str(shown_key)
    media = None if pool.media is None else pool.media[pos]
    if pool.media_kind == "image" and media is not None:
        if mode == "data-url":
            return {"key": shown, "image": data_url(media)}
        if mode == "local-files":
            if files_root is None:
                raise MediaError("annotators.labelstudio.files_root must be set when media = local-files")
            if links_dir is not None:
                link = opaque_link(media, links_dir, shown)
                return {"key": shown, "image": local_files_url(link, files_root, follow_links=False)}
            return {"key": shown, "image": local_files_url(media, files_root)}
        if not template:
            raise MediaError("annotators.labelstudio.media_url must be set when media = url-template")
        return {"key": shown, "image": template_url(template, key)}
    if pool.media_kind == "text" and media is not None:
        return {"key": shown, "text": str(media)}
    return {"key": shown, "text": shown}  # a bare feature vector (or an injected item): its name is all there is


def pool_kind(pool) -> str | None:
    """'image', 'text' or None (bare features): what the project's object tag must show."""
    if pool.media is None or pool.media_kind is None:
        return None
    return pool.media_kind if np.any([m is not None for m in pool.media]) else None


def small_images(pool, limit: int = 128, sample: int = 20) -> bool:
    """Are the pool's images small (every one of the first ``sample`` at most ``limit`` pixels on a side)?
    Then the labeling interface shows their pixels sharp instead of smoothing them into a blur. Reads only the
    files' headers."""
    from PIL import Image

    paths = [p for p in (pool.media if pool.media is not None else []) if p is not None][:sample]
    if not paths or pool.media_kind != "image":
        return False
    try:
        return all(max(Image.open(p).size) <= limit for p in paths)
    except OSError:  # unreadable here (e.g. served by URL template only): keep the default rendering
        return False
